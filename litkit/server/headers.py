"""Request headers read as numbers, parsed strictly: ASCII decimal digits only.

``str.isdigit()`` accepts what ``int()`` refuses (``"²"``, Arabic-Indic digits) and ``int()`` refuses
strings of more than 4,300 digits, so neither is a parser for a header from the network. Every header
the server reads as a number goes through here and fails as a ``BadHeader`` with the status to answer.
"""

from __future__ import annotations

import re

__all__ = ["BadHeader", "accepts_gzip", "content_length"]

_DECIMAL = re.compile(r"[0-9]+")
_LIST_SEPARATOR = re.compile(r",[ \t]*")
# Longer than this is refused before any conversion (int() itself stops at 4,300 digits).
_MAX_LENGTH_CHARS = 100


class BadHeader(ValueError):
    """A header the request cannot be served with; ``status`` is the answer (400 or 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def content_length(value: str | None, limit: int) -> int | None:
    """The body size a ``Content-Length`` announces, None without one.

    Repeated equal values (``5, 5``, as proxies sometimes send) count once, as in Tornado.

    Raises:
        BadHeader: 400 when the value is not decimal digits or repeats with different values; 413
            when it announces more than ``limit`` bytes.
    """
    if value is None:
        return None
    shown = value if len(value) <= 40 else f"{value[:40]}... ({len(value)} characters)"
    pieces = _LIST_SEPARATOR.split(value)
    if any(_DECIMAL.fullmatch(piece) is None for piece in pieces):
        raise BadHeader(400, f"Content-Length must be a number of bytes in decimal digits (0-9), got {shown!r}")
    if any(piece != pieces[0] for piece in pieces):
        raise BadHeader(400, f"Content-Length has several different values ({shown!r}); send one")
    digits = pieces[0].lstrip("0") or "0"
    if len(digits) > len(str(limit)) or int(digits) > limit:
        size = f"{digits} bytes" if len(digits) <= 40 else f"a number of {len(digits)} digits"
        raise BadHeader(413, f"Content-Length announces {size}, more than max_body_size={limit} bytes; send less, or serve with a larger max_body_size")
    if len(value) > _MAX_LENGTH_CHARS:
        raise BadHeader(400, f"Content-Length has {len(value)} characters; send the length without leading zeros")
    return int(digits)


def accepts_gzip(value: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip (``gzip``, ``x-gzip`` or ``*``, not at ``q=0``)."""
    if not value:
        return False
    for item in value.split(","):
        coding, _, parameters = item.partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            weight = parameters.strip().lower().replace(" ", "")
            if not weight.startswith("q="):
                return True
            try:
                return float(weight[2:]) > 0
            except ValueError:
                return False
    return False
