"""LitServe's conventions, which ``litkit.LitServer`` asks of every backend for the APIs it serves
(``litkit.serve()`` keeps litkit's own):

* a streamed chunk is sent as LitServe's ``format_encoded_response`` makes it: a dict (or a
  pydantic model) as a JSON line, a str or bytes as they are, with no newline added;
* a batched stream runs as LitServe 0.2.19's loop runs it: ``unbatch`` gets ``predict``'s whole
  iterator, ``encode_response`` the iterator of unbatched lists, and yields one list per step,
  item *i* for request *i* (``litkit.contract.batching.litserve_steps``); litkit's own order
  unbatches each step and hands request *i* its share through its own ``encode_response``;
* an error answer is FastAPI's ``{"detail": ...}``, and a hook's unexpected exception reads
  ``Internal server error`` (its traceback goes to the server's log);
* the server answers LitServe's ``GET /`` (``litserve running``), health check (``ok`` or
  ``not ready``, at ``healthcheck_path``) and info (``{"model", "server"}``, at ``info_path``):
  the mark carries them as the ``face`` (``litkit.server.litserve_routes``).

``LitServer`` marks a copy of each API (``following_litserve``); the mark travels with the API to
the workers, and the server reads it from the endpoint's plan. Stdlib only.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ..wire.encoding import encode_chunk, encode_json

__all__ = ["follows_litserve", "following_litserve", "litserve_chunk", "litserve_face", "chunk_encoder"]

_MARK = "_litkit_litserve"


def following_litserve(api: Any, face: dict[str, Any] | None = None) -> Any:
    """A copy of ``api`` marked to follow LitServe's conventions (the caller's object is left as it
    is). ``face``: the server's LitServe paths and answers (plain JSON data, read by the server:
    ``healthcheck_path``, ``info_path``, ``info``), which travel with the mark."""
    marked = copy.copy(api)
    setattr(marked, _MARK, dict(face or {}))
    return marked


def follows_litserve(api: Any) -> bool:
    """Whether ``api`` was marked by ``following_litserve``."""
    return isinstance(getattr(api, _MARK, None), dict)


def litserve_face(api: Any) -> dict[str, Any] | None:
    """The ``face`` ``api`` was marked with (None: not marked)."""
    face = getattr(api, _MARK, None)
    return face if isinstance(face, dict) else None


def litserve_chunk(value: Any) -> bytes:
    """One streamed chunk as LitServe sends it: str and bytes as they are, anything else as a JSON line."""
    if isinstance(value, (str, bytes, bytearray)):
        return encode_chunk(value)
    if isinstance(value, dict):
        try:  # LitServe's json.dumps(data) + "\n", byte for byte
            return json.dumps(value, allow_nan=False).encode() + b"\n"
        except (TypeError, ValueError):
            pass  # e.g. a pydantic model inside: litkit's encoder takes it, or names the hook
    return encode_json(value, hook="encode_response (stream chunk)") + b"\n"


def chunk_encoder(api: Any) -> Any:
    """The function that turns ``api``'s streamed chunks into bytes: LitServe's or litkit's."""
    return litserve_chunk if follows_litserve(api) else encode_chunk
