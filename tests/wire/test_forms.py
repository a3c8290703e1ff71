"""HTML form bodies, parsed in the worker (``litkit.wire.forms``): what a browser or ``requests``
sends comes out as LitServe's code reads it, and a hostile body is refused at a limit, quickly,
with a 413 naming it (issue 25, bug 2). The same probes through a real server are in
tests/server/test_bad_input.py."""

from __future__ import annotations

import io

import pytest
import requests

from litkit.errors import HTTPError
from litkit.wire import forms
from litkit.wire.forms import FORM_MARKER, decode_form, mark_form, safe_filename


def multipart(parts: list[tuple[bytes, bytes]], boundary: bytes = b"b0und4ry") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + headers + b"\r\n\r\n" + content + b"\r\n" for headers, content in parts)
    return mark_form("multipart/form-data; boundary=" + boundary.decode(), body + b"--" + boundary + b"--\r\n")


def field(name: str, value: bytes = b"", extra: bytes = b"") -> tuple[bytes, bytes]:
    return b'Content-Disposition: form-data; name="' + name.encode() + b'"' + extra, value


def test_what_requests_sends_is_read_as_starlette_reads_it():
    prepared = requests.Request("POST", "http://x/", files={"image": ("cat.png", b"\x89PNG\r\n--not-a-boundary", "image/png")}, data={"name": "Ada", "tag": ["a", "b"]}).prepare()
    form = decode_form(mark_form(prepared.headers["Content-Type"], prepared.body))
    assert form["name"] == "Ada" and form.getlist("tag") == ["a", "b"] and form["tag"] == "b"
    image = form["image"]
    assert (image.filename, image.content_type, image.size) == ("cat.png", "image/png", 22)
    assert image.file.read() == b"\x89PNG\r\n--not-a-boundary" and isinstance(image.file, io.BytesIO)


def test_quoted_and_rfc5987_filenames_and_a_field_charset():
    form = decode_form(multipart([
        field("a", b"x", b'; filename="say \\"hi\\".txt"'),
        field("b", b"y", b"; filename=\"fallback.txt\"; filename*=UTF-8''%C3%A9t%C3%A9.txt"),
        field("c", "café".encode("latin-1"), b"\r\nContent-Type: text/plain; charset=latin-1"),
    ]))
    assert form["a"].filename == 'say "hi".txt' and form["b"].filename == "été.txt" and form["c"] == "café"


def test_a_large_file_is_kept_on_disk_not_in_memory():
    big = b"\x01" * (forms.SPOOL_FILE_BYTES + 1)
    form = decode_form(multipart([field("f", big, b'; filename="big.bin"'), field("g", b"small", b'; filename="s.bin"')]))
    assert not isinstance(form["f"].file, io.BytesIO) and form["f"].read() == big and form["f"].size == len(big)
    assert isinstance(form["g"].file, io.BytesIO)
    form["f"].close()


def test_safe_filename_keeps_the_last_component_only():
    assert safe_filename("../../.bashrc") == ".bashrc"
    assert safe_filename("C:\\Users\\x\\a.png") == "a.png"
    assert safe_filename("a\x00b\r\n.txt") == "ab.txt"
    assert [safe_filename(name) for name in (None, "", ".", "..", "x/")] == [None] * 5
    form = decode_form(multipart([field("f", b"x", b'; filename="../../etc/passwd"')]))
    assert form["f"].filename == "../../etc/passwd" and form["f"].safe_filename == "passwd"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (mark_form("multipart/form-data", b"x"), "needs a boundary"),
        (mark_form("multipart/form-data; boundary=zz", b"no delimiter here"), "no parts it can read"),
        (multipart([field("a", b"x")])[:-12], "closing boundary is missing"),
        (multipart([(b"Content-Type: text/plain", b"x")]), "no name in its Content-Disposition"),
        (multipart([(b"no colon here", b"x")]), "malformed header line"),
        (mark_form("application/x-www-form-urlencoded", b"a=\xff"), "not UTF-8"),
        (FORM_MARKER + b"no newline", "no content type"),
    ],
    ids=["no-boundary", "no-delimiter", "truncated", "no-name", "bad-header", "not-utf8", "no-content-type"],
)
def test_a_malformed_form_is_a_value_error_saying_what_is_wrong(body, message):
    with pytest.raises(ValueError, match=message):
        decode_form(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        # the probes: 100k tiny parts (52 s in the email parser), 100k header parameters
        # (29 s, 534 MiB), a 14.6 MiB urlencoded body (782-869 MiB)
        (multipart([field("a")] * 100_000), "more than 1000 fields"),
        (multipart([field("a", b"v", b"; p=1" * 100_000)]), "headers are longer than 16384 bytes"),
        (multipart([field("a", b"v", b"; p=1" * 100)]), "more than 16 parameters"),
        (mark_form("application/x-www-form-urlencoded", b"a=1&" * 3_800_000), "more than 1000 fields"),
        (multipart([field("f", b"", b'; filename="x"')] * 1001), "more than 1000 files"),
        (multipart([field("a", b"x" * (forms.MAX_FIELD_BYTES + 1))]), "send large data as a file part"),
    ],
    ids=["many-parts", "huge-part-header", "many-params", "big-urlencoded", "many-files", "big-field"],
)
def test_a_form_past_a_limit_is_a_413_naming_it(body, message):
    """Issue 25, bug 2: form bodies were parsed by the stdlib ``email`` parser with no limit on
    parts, parameters or fields."""
    with pytest.raises(HTTPError, match=message) as raised:
        decode_form(body)
    assert raised.value.status == 413
