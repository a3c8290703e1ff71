"""HTML form bodies (``multipart/form-data`` and ``application/x-www-form-urlencoded``), as LitServe takes them.

The server does not parse a form: it puts ``FORM_MARKER``, the request's ``Content-Type`` and a
newline before the raw body (``mark_form``), and the worker parses it (``decode_form``) into a
``FormData``: a dict from field name to its value, a ``str`` for a plain field and an ``UploadFile``
for a file. ``decode_request`` receives it, as LitServe's receives Starlette's form:
``request["image"].file.read()``, ``request["name"]``. A JSON body never starts with the marker's
NUL byte, so the two cannot be confused.

Stdlib only: both processes import this module.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import urllib.parse
from typing import Any

__all__ = ["FORM_MARKER", "FormData", "UploadFile", "decode_form", "is_form", "mark_form"]

FORM_MARKER = b"\x00litkit-form\x00"
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def is_form(content_type: str) -> bool:
    """Whether a ``Content-Type`` header names an HTML form body."""
    return content_type.split(";", 1)[0].strip().lower() in _FORM_TYPES


def mark_form(content_type: str, body: bytes) -> bytes:
    """The body as it travels to the worker: the marker, the content type, a newline, the body."""
    return b"".join((FORM_MARKER, content_type.encode("latin-1"), b"\n", body))


class UploadFile:
    """A file field of a form, as Starlette's ``UploadFile`` reads: ``filename``, ``content_type``,
    ``file`` (a binary file object), ``size``, ``headers``; ``read()`` returns the bytes (not a coroutine)."""

    def __init__(self, filename: str | None, content: bytes, content_type: str | None, headers: dict[str, str]) -> None:
        self.filename = filename
        self.content_type = content_type
        self.headers = headers
        self.size = len(content)
        self.file = io.BytesIO(content)

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)

    def seek(self, offset: int) -> None:
        self.file.seek(offset)

    def close(self) -> None:
        self.file.close()

    def __repr__(self) -> str:
        return f"UploadFile(filename={self.filename!r}, size={self.size}, content_type={self.content_type!r})"


class FormData(dict):  # type: ignore[type-arg]
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
    """
    header, _, raw = body[len(FORM_MARKER) :].partition(b"\n")
    content_type = header.decode("latin-1")
    if content_type.split(";", 1)[0].strip().lower() == "application/x-www-form-urlencoded":
        try:
            pairs = urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError as error:
            raise ValueError(f"the form body is not UTF-8: {error}") from None
        return FormData(list(pairs))
    return FormData(_multipart(content_type, raw))


def _multipart(content_type: str, raw: bytes) -> list[tuple[str, Any]]:
    if "boundary=" not in content_type:
        raise ValueError("a multipart/form-data body needs a boundary in its Content-Type, e.g. 'multipart/form-data; boundary=XYZ'")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + raw)
    if not message.is_multipart():
        raise ValueError("the multipart/form-data body has no parts it can read; check its boundary")
    items: list[tuple[str, Any]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name is None:
            raise ValueError("a multipart/form-data part has no name in its Content-Disposition")
        content = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is None:  # a plain field, as Starlette reads it: a part without a filename
            items.append((str(name), content.decode(part.get_content_charset() or "utf-8", "replace")))
        else:
            headers = {key.lower(): str(value) for key, value in part.items()}
            items.append((str(name), UploadFile(filename, content, part.get("content-type"), headers)))
    return items
