"""How request bodies become values, and values returned by hooks become bytes on the wire
(worker side, stdlib only)."""

from __future__ import annotations

import json
import traceback
from typing import Any

from ..errors import HTTPError, http_exception_detail, http_exception_status
from .forms import FORM_MARKER, decode_form

__all__ = ["decode_body", "encode_json", "encode_chunk", "encode_error", "encode_decode_error"]

def _model_dump(value: Any) -> Any:
    """JSON for what the encoder does not know: a pydantic model (anywhere in the value) as its
    ``model_dump(mode="json")``, recognised without importing pydantic."""
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump(mode="json")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# ``default`` runs only for values JSON does not know, so plain answers pay nothing for it.
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=_model_dump)


def decode_body(body: bytes) -> Any:
    """The parsed JSON of a request body, strictly: UTF-8, no NaN or Infinity, no number too large
    for a float, no nesting past the interpreter's recursion limit. An HTML form (which the server
    marks, see ``litkit.wire.forms``) becomes a ``FormData``.

    Raises:
        HTTPError: 400 saying what is wrong with the body.
    """
    if body.startswith(FORM_MARKER):  # an HTML form the server passed on (litkit.wire.forms)
        try:
            return decode_form(body)
        except ValueError as error:
            raise HTTPError(400, f"request body is not a valid form: {error}") from None
    try:
        # What json.loads does with bytes (detect UTF-8/16/32, skip a UTF-8 BOM), then one shared
        # decoder: json.loads(body, parse_float=...) builds a new JSONDecoder on every call, about
        # half the cost of decoding a small body.
        return _decoder.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except RecursionError:
        raise HTTPError(400, "request body is not valid JSON: it nests too deeply; send at most a few hundred levels") from None
    except (UnicodeDecodeError, ValueError) as error:  # a too-long integer literal is a ValueError too
        raise HTTPError(400, f"request body is not valid JSON: {error}") from None


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]}{'...' if len(text) > 40 else ''} is too large for a float")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value; send finite numbers only")


_decoder = json.JSONDecoder(parse_float=_finite_float, parse_constant=_reject_constant)


def encode_json(value: Any, hook: str = "encode_response") -> bytes:
    """The JSON body for a non-streaming response; a pydantic model is sent as its ``model_dump(mode="json")``.

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


def encode_error(error: BaseException, status: int = 500, prefix: str = "") -> bytes:
    """The ``ERROR`` payload for an exception a hook raised: its status (``HTTPError``, or a
    ``fastapi.HTTPException``), else
    ``status`` (500) with ``prefix`` before the error's type and message.

    Call it inside the ``except`` block, so the report carries the traceback for the server's log.
    """
    if isinstance(error, HTTPError):
        return json.dumps({"status": error.status, "error": error.message}).encode()
    raised = http_exception_status(error)  # a fastapi.HTTPException keeps its status and detail, as in LitServe
    if raised is not None:
        return json.dumps({"status": raised[0], "error": raised[1], "detail": http_exception_detail(error)}).encode()
    report = {"status": status, "error": f"{prefix}{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    return json.dumps(report).encode()


def encode_decode_error(error: BaseException) -> bytes:
    """The ``ERROR`` payload when ``decode_request`` raises: the body is not what it expects, a 400."""
    return encode_error(error, 400, "decode_request could not use this request body: ")
