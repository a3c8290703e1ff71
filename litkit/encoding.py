"""How request bodies become values, and values returned by hooks become bytes on the wire
(worker side, stdlib only)."""

from __future__ import annotations

import json
import traceback
from typing import Any

from .errors import HTTPError

__all__ = ["decode_body", "encode_json", "encode_chunk", "encode_error"]

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def decode_body(body: bytes) -> Any:
    """The parsed JSON of a request body.

    Raises:
        HTTPError: 400, the body is not valid JSON (or not UTF-8).
    """
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise HTTPError(400, f"request body is not valid JSON: {error}") from None


def encode_json(value: Any, hook: str = "encode_response") -> bytes:
    """The JSON body for a non-streaming response.

    Raises:
        TypeError: ``value`` holds something JSON cannot encode; the message names the hook.
    """
    try:
        return _encoder.encode(value).encode()
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{hook} returned a value JSON cannot encode ({error}); return dicts, lists, str, "
            "int, float (finite), bool or None, e.g. convert numpy arrays with .tolist()"
        ) from error


def encode_chunk(value: Any) -> bytes:
    """One streamed chunk: str goes out as is, bytes as is, anything else as JSON."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return encode_json(value, hook="encode_response (stream chunk)")


def encode_error(error: BaseException) -> bytes:
    """The ``ERROR`` payload for an exception a hook raised: its status (``HTTPError``) or 500.

    Call it inside the ``except`` block, so a 500 carries the traceback for the server's log.
    """
    if isinstance(error, HTTPError):
        return json.dumps({"status": error.status, "error": error.message}).encode()
    report = {"status": 500, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    return json.dumps(report).encode()
