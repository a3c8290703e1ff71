"""How an answer's parts look on HTTP, for every backend: a streamed chunk as an NDJSON line or an
SSE event, the end of an SSE stream, the JSON of an error answer, and the final error line of a
stream that fails after its first chunk. The in-process server (``litkit.server.relay``) and a Ray
Serve replica (``litkit.ray.replica``) both frame with these.

Stdlib only.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NDJSON", "SSE", "SSE_DONE", "error_body", "shown_message", "frame_chunk", "splits_line", "split_line_message", "stream_error"]

NDJSON = "application/x-ndjson"
SSE = "text/event-stream"
SSE_DONE = b"data: [DONE]\n\n"  # an SSE stream's last event (OpenAI's convention)


def frame_chunk(payload: bytes, sse: bool, litserve: bool = False) -> bytes:
    """One encoded chunk on the wire: an NDJSON line, or an SSE event (a ``data:`` line per line of it).

    ``litserve``: the chunk is LitServe's already (``litkit.contract.conventions.litserve_chunk``:
    a JSON line, or text as it is), sent as it is; as an SSE event, without the JSON line's newline.
    """
    if litserve:
        if not sse:
            return payload
        payload = payload[:-1] if payload.endswith(b"\n") else payload
    if not sse:
        return payload + b"\n"
    if b"\n" not in payload:
        return b"data: " + payload + b"\n\n"
    return b"".join(b"data: " + line + b"\n" for line in payload.split(b"\n")) + b"\n"


def splits_line(payload: bytes, sse: bool) -> bool:
    """Whether this chunk cannot be an NDJSON line: text with a newline would split it in two (JSON
    chunks have none; SSE carries newlines as several ``data:`` lines)."""
    return not sse and b"\n" in payload


def split_line_message(chunk: int) -> str:
    """The 500 message for chunk number ``chunk`` that ``splits_line``."""
    return (
        f"chunk {chunk} is text with a newline, which would split its NDJSON line; yield a dict or list "
        "(sent as one JSON line), text without newlines, or stream as SSE (Accept: text/event-stream), "
        "which carries them"
    )


def error_body(spec: Any, status: int, message: str, request_id: str, detail: Any = None, litserve: bool = False) -> dict[str, Any]:
    """An error answer's JSON: the spec's envelope (OpenAI's, for instance) or litkit's own
    ``{"error", "request_id"}``; with the ``detail`` of a ``fastapi.HTTPException`` when one was
    raised (LitServe's ``{"detail": ...}``). ``litserve`` (``litkit.contract.conventions``): only
    FastAPI's ``{"detail": ...}``, the exception's detail or else the message."""
    if litserve and spec is None:
        return {"detail": message if detail is None else detail}
    body: dict[str, Any] = spec.error_body(status, message, request_id) if spec is not None else {"error": message, "request_id": request_id}
    if detail is not None:
        body["detail"] = detail
    return body


def shown_message(report: dict[str, Any], litserve: bool) -> str:
    """The message a client reads for a worker's error ``report``: its own, or, under LitServe's
    conventions, LitServe's ``Internal server error`` for a hook's unexpected exception (a 5xx with
    a traceback, which the server's log keeps)."""
    if litserve and report.get("traceback") and report["status"] >= 500:
        return "Internal server error"
    return str(report["error"])


def stream_error(body: bytes, sse: bool) -> bytes:
    """A stream's last part when it fails after its first chunk: an ``event: error`` for SSE, a final
    JSON line for NDJSON (the status line went out with the first chunk)."""
    return b"event: error\ndata: " + body + b"\n\n" if sse else body + b"\n"
