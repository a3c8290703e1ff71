"""HTML form bodies (``multipart/form-data`` and ``application/x-www-form-urlencoded``), as LitServe takes them.

The server does not parse a form: it puts ``FORM_MARKER``, the request's ``Content-Type`` and a
newline before the raw body (``mark_form``), and the worker parses it (``decode_form``) into a
``FormData``: a dict from field name to its value, a ``str`` for a plain field and an ``UploadFile``
for a file. ``decode_request`` receives it, as LitServe's receives Starlette's form:
``request["image"].file.read()``, ``request["name"]``. A JSON body never starts with the marker's
NUL byte, so the two cannot be confused.

The body comes from any client, so parsing is bounded (issue 25: the stdlib ``email`` parser took
52 s for 100k tiny parts and 534 MiB for 100k header parameters): one pass over the body with
``bytes.find``, at most ``MAX_FIELDS`` fields and ``MAX_FILES`` files, ``MAX_PART_HEADER_BYTES`` of
headers and ``MAX_HEADER_PARAMS`` parameters per part, ``MAX_FIELD_BYTES`` per plain field; a file
past ``SPOOL_FILE_BYTES`` goes to a temporary file on disk instead of memory. Past a limit the worker
answers 413 naming it; a malformed body is a 400. (The limits are Starlette's defaults.)

Stdlib only: both processes import this module.
"""

from __future__ import annotations

import codecs
import io
import re
import tempfile
import urllib.parse
from typing import IO, Any

from ..errors import HTTPError

__all__ = [
    "FORM_MARKER",
    "FormData",
    "MAX_FIELDS",
    "MAX_FIELD_BYTES",
    "MAX_FILES",
    "MAX_HEADER_PARAMS",
    "MAX_PART_HEADER_BYTES",
    "SPOOL_FILE_BYTES",
    "UploadFile",
    "decode_form",
    "is_form",
    "mark_form",
    "safe_filename",
]

FORM_MARKER = b"\x00litkit-form\x00"
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")

MAX_FIELDS = 1000  # plain fields of a form (urlencoded pairs, multipart parts without a filename)
MAX_FILES = 1000  # file parts of a multipart form
MAX_PART_HEADER_BYTES = 16 * 1024  # the header block of one multipart part
MAX_HEADER_PARAMS = 16  # parameters of one part header (name, filename, filename*, charset...)
MAX_FIELD_BYTES = 1024 * 1024  # one plain field's value; a file part has no limit of its own
SPOOL_FILE_BYTES = 1024 * 1024  # a file part larger than this is kept on disk, not in memory
_MAX_BOUNDARY = 70  # RFC 2046


def is_form(content_type: str) -> bool:
    """Whether a ``Content-Type`` header names an HTML form body."""
    return content_type.split(";", 1)[0].strip().lower() in _FORM_TYPES


def mark_form(content_type: str, body: bytes) -> bytes:
    """The body as it travels to the worker: the marker, the content type, a newline, the body."""
    return b"".join((FORM_MARKER, content_type.encode("latin-1"), b"\n", body))


def safe_filename(filename: str | None) -> str | None:
    """A name that is safe to join to a folder: the last component of ``filename`` (after any ``/``
    or ``\\``), without control characters; None if nothing usable is left (``""``, ``"."``, ``".."``).

    ``UploadFile.filename`` is what the client sent, e.g. ``"../../.bashrc"``; never build a path
    from it. ``safe_filename("../../.bashrc")`` is ``".bashrc"``, ``safe_filename("C:\\\\x\\\\a.png")``
    ``"a.png"``.
    """
    if filename is None:
        return None
    name = re.split(r"[/\\]", filename)[-1]
    name = "".join(ch for ch in name if ch >= " " and ch != "\x7f").strip()
    return None if name in ("", ".", "..") else name


class UploadFile:
    """A file field of a form, as Starlette's ``UploadFile`` reads: ``filename`` (as the client sent
    it: see ``safe_filename``), ``content_type``, ``file`` (a binary file object: in memory, or a
    temporary file on disk past ``SPOOL_FILE_BYTES``), ``size``, ``headers``; ``read()`` returns the
    bytes (not a coroutine)."""

    def __init__(self, filename: str | None, content: bytes | memoryview, content_type: str | None, headers: dict[str, str]) -> None:
        self.filename = filename
        self.content_type = content_type
        self.headers = headers
        self.size = len(content)
        self.file: IO[bytes]
        if self.size > SPOOL_FILE_BYTES:
            self.file = tempfile.TemporaryFile(prefix="litkit-upload-")  # unlinked at once: gone when closed
            self.file.write(content)
            self.file.seek(0)
        else:
            self.file = io.BytesIO(content)

    @property
    def safe_filename(self) -> str | None:
        """``safe_filename(self.filename)``: a basename that is safe to join to a folder, or None."""
        return safe_filename(self.filename)

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)

    def seek(self, offset: int) -> None:
        self.file.seek(offset)

    def close(self) -> None:
        self.file.close()

    def __repr__(self) -> str:
        return f"UploadFile(filename={self.filename!r}, size={self.size}, content_type={self.content_type!r})"


class FormData(dict):
    """A form's fields: ``form[name]`` is the last value given for ``name``; ``getlist(name)`` all of them."""

    def __init__(self, items: list[tuple[str, Any]]) -> None:
        super().__init__(items)
        self._items = items

    def getlist(self, name: str) -> list[Any]:
        return [value for key, value in self._items if key == name]

    def multi_items(self) -> list[tuple[str, Any]]:
        return list(self._items)


def decode_form(body: bytes) -> FormData:
    """The ``FormData`` of a body that ``mark_form`` made.

    Raises:
        ValueError: the body is not a form its content type describes (the worker answers 400).
        HTTPError: 413, the form is past one of this module's limits; the message names it.
    """
    newline = body.find(b"\n", len(FORM_MARKER))
    if newline < 0:
        raise ValueError("the form has no content type")
    content_type = body[len(FORM_MARKER) : newline].decode("latin-1")
    if content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded":
        return FormData(_urlencoded(body[newline + 1 :]))
    return FormData(_multipart(content_type, body, newline + 1))


def _too_many(what: str, limit: int, advice: str) -> HTTPError:
    return HTTPError(413, f"the form has more than {limit} {what}; {advice}")


def _urlencoded(raw: bytes) -> list[tuple[str, str]]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"the form body is not UTF-8: {error}") from None
    if text.count("&") >= MAX_FIELDS:  # before parse_qsl builds a tuple per field
        raise _too_many("fields", MAX_FIELDS, "send fewer fields, or a JSON body")
    return urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=False)


def _params(value: str, header: str) -> tuple[str, dict[str, str]]:
    """A header's value and parameters (``form-data; name="a"; filename="b"``), lower-case names,
    quoted strings unquoted, RFC 5987 ``name*=charset''text`` decoded (and preferred)."""
    head, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for count, match in enumerate(re.finditer(r'\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)\s*(?:;|$)', rest)):
        if count >= MAX_HEADER_PARAMS:
            raise HTTPError(413, f"a form part's {header} header has more than {MAX_HEADER_PARAMS} parameters; send name and filename only")
        name, text = match.group(1).lower(), match.group(2).strip()
        if text.startswith('"'):
            text = re.sub(r"\\(.)", r"\1", text[1:-1])
        if name.endswith("*"):
            charset, _, encoded = text.partition("'")
            _language, _, encoded = encoded.partition("'")
            try:
                params[name[:-1]] = urllib.parse.unquote(encoded, encoding=charset or "utf-8", errors="strict")
            except (LookupError, UnicodeDecodeError):
                raise ValueError(f"a form part's {header} has {name}={text!r}, which is not charset'language'percent-encoded text") from None
            continue
        params.setdefault(name, text)
    return head.strip().lower(), params


def _part_headers(block: memoryview) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in bytes(block).decode("utf-8", "replace").split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ValueError(f"a form part has a malformed header line {line[:80]!r}; each is 'Name: value'")
        headers[name.strip().lower()] = value.strip()
    return headers


def _boundary(content_type: str) -> bytes:
    _type, params = _params(content_type, "Content-Type")
    boundary = params.get("boundary")
    if not boundary:
        raise ValueError("a multipart/form-data body needs a boundary in its Content-Type, e.g. 'multipart/form-data; boundary=XYZ'")
    if len(boundary) > _MAX_BOUNDARY:
        raise ValueError(f"the multipart boundary is {len(boundary)} characters long; RFC 2046 allows at most {_MAX_BOUNDARY}")
    return boundary.encode("latin-1", "replace")


def _multipart(content_type: str, data: bytes, offset: int) -> list[tuple[str, Any]]:
    """The parts of the form that starts at ``data[offset]``, in one pass: each delimiter is found
    with ``bytes.find`` (linear in the body, which is never copied whole), and each limit is checked
    before the part it concerns is built."""
    delimiter = b"--" + _boundary(content_type)
    first = data.find(delimiter, offset)
    if first < 0 or (first > offset and data[first - 2 : first] != b"\r\n"):
        raise ValueError("the multipart/form-data body has no parts it can read; check its boundary")
    items: list[tuple[str, Any]] = []
    fields = files = 0
    position = first + len(delimiter)
    while True:
        if data[position : position + 2] == b"--":
            return items
        line_end = data.find(b"\r\n", position, position + 1024)
        if line_end < 0 or data[position:line_end].strip(b" \t"):
            raise ValueError("a multipart/form-data boundary line is not followed by CRLF; check the body's line endings")
        start = line_end + 2
        headers_end = data.find(b"\r\n\r\n", start - 2, start + MAX_PART_HEADER_BYTES + 2)
        if headers_end < 0:
            if data.find(b"\r\n\r\n", start) < 0:
                raise ValueError("a multipart/form-data part has no blank line after its headers, or the body ends early")
            raise HTTPError(413, f"a form part's headers are longer than {MAX_PART_HEADER_BYTES} bytes; send name, filename and Content-Type only")
        headers = _part_headers(memoryview(data)[start:headers_end]) if headers_end > start else {}
        content_start = headers_end + 4
        end = data.find(b"\r\n" + delimiter, content_start)
        if end < 0:
            raise ValueError("the multipart/form-data body ends inside a part: its closing boundary is missing")
        _disposition, params = _params(headers.get("content-disposition", ""), "Content-Disposition")
        name = params.get("name")
        if name is None:
            raise ValueError("a multipart/form-data part has no name in its Content-Disposition")
        content = memoryview(data)[content_start:end]
        if "filename" in params:
            files += 1
            if files > MAX_FILES:
                raise _too_many("files", MAX_FILES, "send fewer files in one request (or put them in one archive)")
            items.append((name, UploadFile(params["filename"], content, headers.get("content-type"), headers)))
        else:  # a plain field, as Starlette reads it: a part without a filename
            fields += 1
            if fields > MAX_FIELDS:
                raise _too_many("fields", MAX_FIELDS, "send fewer fields, or a JSON body")
            if len(content) > MAX_FIELD_BYTES:
                raise HTTPError(
                    413, f"the form field {name[:80]!r} is {len(content)} bytes, more than {MAX_FIELD_BYTES}; send large data as a file part (with a filename)"
                )
            _type, type_params = _params(headers.get("content-type", ""), "Content-Type")
            items.append((name, bytes(content).decode(_charset(type_params.get("charset")), "replace")))
        position = end + 2 + len(delimiter)


def _charset(name: str | None) -> str:
    if not name:
        return "utf-8"
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise ValueError(f"a form field's charset {name[:40]!r} is unknown; send UTF-8") from None
