"""How values returned by hooks become bytes on the wire (worker side, stdlib only)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["encode_json", "encode_chunk"]

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


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
