"""The answer writer: a request's answer as HTTP, from the worker's frames, with back-pressure.

``AnswerWriter`` is the half of ``litkit.server.relay.EndpointRequest`` that writes: a ``RESULT``
frame becomes a JSON body (gzipped for LitServer's endpoints past ``GZIP_MIN_SIZE``); ``CHUNK``
frames go out as NDJSON lines or SSE events, the frames of one read in one write, the stream's
headers with the first; ``ERROR`` becomes an error status, or a final error line once streaming
began; refusals and the CORS preflight are answered here too. The other half (the relay) owns the
request's phase (``litkit.server.phases``) and its job; this one moves the phase only to STREAMING
and ANSWERED. It changes the request's record only through the endpoint's tracker (``chunk``,
``stream_began``, ``finish``), and once the answer is written gives the job back to the pool
(``WorkerPool.release``, which closes the pipe: never this side).

Back-pressure: after a write the socket has not taken whole, the relay stops reading the pipe and
``_wait_for_write`` waits for the socket to drain; a client that reads nothing for
``client_timeout`` is cut off. A base class rather than an object of its own: one object per
request keeps the hot path short (``docs/benchmarks.md``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import time
from typing import Any

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.httputil import HTTPHeaders, ResponseStartLine

from ..contract import framing
from ..pool.jobs import Job
from ..pool.tracking import RequestRecord
from ..wire.protocol import Kind
from .access import KEY_CHALLENGE, PREFLIGHT_HEADERS, PREFLIGHT_REFUSED, cors_headers
from .endpoints import EndpointState, ServingState
from .halfclose import SpareConnection
from .phases import STREAM_BEGAN, Phase

__all__ = ["AnswerWriter", "METHODS", "error_body", "error_json", "GZIP_MIN_SIZE", "GZIP_LEVEL"]

logger = logging.getLogger("litkit.server")
access_logger = logging.getLogger("litkit.server.access")

# LitServer's gzip for JSON answers, as LitServe's GZipMiddleware(minimum_size=1000) does; level 6
# (zlib's default) rather than Starlette's 9: most of the saving for a fraction of the server's time.
GZIP_MIN_SIZE = 1000
GZIP_LEVEL = 6
# The methods an endpoint answers (the Allow header of a 405).
METHODS = ("POST", "OPTIONS")


def error_body(endpoint: Any, status: int, message: str, request_id: str, detail: Any = None) -> dict[str, Any]:
    """An error answer's JSON for ``endpoint`` (its spec's envelope, or litkit's own; see
    ``litkit.contract.framing.error_body``, which a Ray replica uses too)."""
    return framing.error_body(getattr(endpoint, "spec", None), status, message, request_id, detail, getattr(endpoint, "litserve", False))


def error_json(endpoint: Any, status: int, message: str, request_id: str, detail: Any = None) -> bytes:
    """``error_body`` as bytes; compact for LitServer's endpoints, as FastAPI writes it."""
    body = error_body(endpoint, status, message, request_id, detail)
    return json.dumps(body, separators=(",", ":") if getattr(endpoint, "litserve", False) else None).encode()


class _HTTPDate:
    """The ``Date`` header's value, formatted once a second instead of once a request."""

    def __init__(self) -> None:
        self._second = 0
        self._text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._text = httputil.format_timestamp(second)
        return self._text


_http_date = _HTTPDate()


class AnswerWriter:
    """Writes one request's answer; ``litkit.server.relay.EndpointRequest`` is the only subclass and
    holds the attributes (in its ``__slots__``) and the hooks declared here."""

    __slots__ = ("_write_deadline",)  # the rest are the subclass's

    endpoint: EndpointState
    serving: ServingState
    # Tornado's connection; a SpareConnection once a client that half-closed is answered.
    _connection: HTTP1Connection | SpareConnection
    request_id: str
    _method: str
    _uri: str
    _arrived: float
    _cors_origin: str | None
    _sse: bool
    _gzip: bool
    _job: Job | None
    _record: RequestRecord | None  # set with _job; changed only through self.endpoint.tracker
    _phase: Phase
    _loop: asyncio.AbstractEventLoop
    _write_deadline: asyncio.TimerHandle | None  # client_timeout's timer while a write waits to drain

    # -- the relay's side, which the writer calls ---------------------------------------------

    def _move(self, to: Phase) -> None:
        raise NotImplementedError

    def _client_is_there(self) -> bool:
        raise NotImplementedError

    def _relay(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _on_client_left(self) -> None:
        raise NotImplementedError

    def _clear_timeout(self) -> None:
        raise NotImplementedError

    def cancel(self, reason: str, state: str = "cancelled") -> None:
        raise NotImplementedError

    @property
    def chunks_sent(self) -> int:
        """How many chunks of the answer went out so far (a cancel's reason says it)."""
        return self._record.chunks if self._record is not None else 0

    # -- frames to HTTP -----------------------------------------------------------------------

    def _write_frames(self, frames: list[tuple[Kind, bytes]]) -> None:
        """Write what the frames say; the chunks among them, and the stream's end, in one write."""
        record = self._record
        if record is None:
            raise RuntimeError(f"request {self.request_id} has frames to write but no record")
        tracker = self.endpoint.tracker
        out: list[bytes] = []
        for kind, payload in frames:
            if kind == Kind.CHUNK:
                count = tracker.chunk(record)
                if not self.endpoint.litserve and framing.splits_line(payload, self._sse):  # JSON chunks have no newline; text might
                    if out:
                        self._send_stream(out)
                    self._answer_error(500, framing.split_line_message(count))
                    return
                out.append(framing.frame_chunk(payload, self._sse, self.endpoint.litserve))
            elif kind == Kind.RESULT:
                self._clear_timeout()
                tracker.finish(record, "completed")
                if self._gzip and len(payload) >= GZIP_MIN_SIZE:  # as LitServe's GZipMiddleware (never a stream)
                    headers = self._headers("application/json")
                    headers["Content-Encoding"] = "gzip"
                    headers["Vary"] = "Accept-Encoding"
                    self._respond(200, gzip.compress(payload, GZIP_LEVEL), headers)
                    return
                self._respond(200, payload)
                return
            elif kind == Kind.END:
                tracker.finish(record, "completed")
                if self._sse:
                    out.append(framing.SSE_DONE)
                self._send_stream(out)
                self._complete(200)
                return
            elif kind == Kind.ERROR:
                if out:
                    self._send_stream(out)
                report = json.loads(payload)
                self._answer_error(report["status"], report["error"], report.get("traceback"), report.get("detail"))
                return
        if out:
            self._send_stream(out)

    def _send_stream(self, parts: list[bytes]) -> None:
        """Write stream bytes in one write, the stream's headers with them the first time."""
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        if self._phase in STREAM_BEGAN:
            if data:
                self._connection.write(data)
            return
        if not self._client_is_there():
            return  # the client left
        self._move(Phase.STREAMING)
        if self._record is not None:
            self.endpoint.tracker.stream_began(self._record)
        self._clear_timeout()
        headers = self._headers(framing.SSE if self._sse else framing.NDJSON)
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
        self._connection.stream.set_nodelay(True)
        self._connection.write_headers(ResponseStartLine("HTTP/1.1", 200, "OK"), headers, data)

    # -- back-pressure ------------------------------------------------------------------------

    def _wait_for_write(self) -> None:
        """Go on once the socket took everything written so far; cut the client off if it reads
        nothing for ``client_timeout``."""
        if not self._client_is_there():  # a closed stream is settled there: it is never closed below
            return
        stream = self._connection.stream
        if self._write_deadline is None:
            self._write_deadline = self._loop.call_later(self.serving.client_timeout, self._on_write_stalled)
        # IOStream resolves a write's future once every byte before it is sent: an empty write
        # is the drain signal.
        stream.write(b"").add_done_callback(self._on_written)

    def _on_written(self, drained: asyncio.Future[None]) -> None:
        if not drained.cancelled():
            drained.exception()  # a client that left fails the write: handled just below
        if not self._client_is_there():  # released, or the client left (a closed stream is settled there)
            return
        stream = self._connection.stream
        if stream.writing():
            self._wait_for_write()
        else:
            self._clear_write_deadline()
            if self._phase is Phase.ANSWERED:
                self._release()
            else:
                self._relay()

    def _on_write_stalled(self) -> None:
        self._write_deadline = None
        if self._phase is Phase.RELEASED:
            return
        self.cancel(f"client read nothing for client_timeout={self.serving.client_timeout:g}s after {self.chunks_sent} chunks", "cancelled")
        self._release()
        self._connection.stream.close()  # what it would have buffered is dropped

    def _clear_write_deadline(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    # -- whole answers ------------------------------------------------------------------------

    def _headers(self, content_type: str | None) -> HTTPHeaders:
        headers = HTTPHeaders()
        if content_type is not None:
            headers["Content-Type"] = content_type
        headers["Date"] = _http_date.now()
        headers["X-Request-ID"] = self.request_id
        if self._cors_origin is not None:
            for name, value in cors_headers(self._cors_origin):
                headers[name] = value
        return headers

    def _respond(self, status: int, body: bytes, headers: HTTPHeaders | None = None) -> None:
        """A whole answer: status, headers and body in one write."""
        if not self._client_is_there():
            return  # the client left
        if headers is None:
            headers = self._headers("application/json")
        headers["Content-Length"] = str(len(body))
        reason = httputil.responses.get(status, "Unknown")
        self._connection.write_headers(ResponseStartLine("HTTP/1.1", status, reason), headers, body)
        self._complete(status)

    def _complete(self, status: int) -> None:
        """The answer (of ``status``) is all written: end the HTTP message, give the job back to the
        pool (``WorkerPool.release``: it closes the pipe, which a worker cut short by an error may
        still write to), and release this request once the socket took it all (or the client is
        cut off after ``client_timeout``)."""
        if self._phase is Phase.RELEASED:
            return  # the client left before the answer could begin (_client_is_there)
        self._move(Phase.ANSWERED)
        self._connection.finish()
        job = self._job
        if job is not None:
            self.endpoint.pool.release(job)
        if job is not None and self._connection.stream.writing():
            self._wait_for_write()
        else:
            self._release()
        if access_logger.isEnabledFor(logging.DEBUG):
            access_logger.debug("%d %s %s %.2fms", status, self._method, self._uri, 1000 * (time.monotonic() - self._arrived))

    def _refuse(self, status: int, message: str, headers: HTTPHeaders | None = None, detail: Any = None) -> None:
        """Answer an error before any work started (a check failed, or the queue is full)."""
        access_logger.info("%d %s %s (%s): %s", status, self._method, self._uri, self._connection.context, message)
        if headers is None:
            headers = self._headers("application/json")
        if status == 401:
            headers["WWW-Authenticate"] = KEY_CHALLENGE
        elif status == 405:
            headers["Allow"] = ", ".join(METHODS)
        self._respond(status, error_json(self.endpoint, status, message, self.request_id, detail), headers)

    def _closing_headers(self) -> HTTPHeaders:
        headers = self._headers("application/json")
        headers["Connection"] = "close"  # the unread body ends this connection (Tornado closes it)
        return headers

    def _answer_preflight(self) -> None:
        """A CORS preflight from an allowed origin (the Origin check refused the others)."""
        if self._cors_origin is None:
            self._refuse(400, PREFLIGHT_REFUSED)
            return
        headers = self._headers(None)
        for name, value in PREFLIGHT_HEADERS:
            headers[name] = value
        self._connection.write_headers(ResponseStartLine("HTTP/1.1", 204, "No Content"), headers)
        self._complete(204)

    # -- errors -------------------------------------------------------------------------------

    def _answer_error(self, status: int, message: str, traceback_text: str | None = None, detail: Any = None) -> None:
        """A failed request: count it, log a hook's traceback, and tell the client (``detail``: a
        ``fastapi.HTTPException``'s, which the body carries too, as LitServe's does)."""
        self._clear_timeout()
        job = self._job
        if self._record is not None:
            self.endpoint.tracker.finish(self._record, "failed", message)
        if traceback_text and job is not None:
            # A client's bad input (4xx from decode_request) is not the operator's alarm.
            level = logging.ERROR if status >= 500 else logging.INFO
            logger.log(level, "request %s failed in a hook:\n%s", self.request_id, traceback_text.rstrip())
            # Into the dashboard's log panel too; the logger line above already reported it.
            worker_id = job.worker.id if job.worker is not None else -1
            self.endpoint.pool.log.add(worker_id, "traceback", f"request {self.request_id} failed:\n{traceback_text.rstrip()}", to_logger=False)
        message = framing.shown_message({"status": status, "error": message, "traceback": traceback_text}, self.endpoint.litserve)
        self._end_with_error(status, message, detail)

    def _end_with_error(self, status: int, message: str, detail: Any = None) -> None:
        """An error status before the first chunk; a final error line or SSE event after it."""
        body = error_json(self.endpoint, status, message, self.request_id, detail)
        if self._phase not in STREAM_BEGAN:
            self._respond(status, body)
            return
        self._send_stream([framing.stream_error(body, self._sse)])
        self._complete(200)

    def _worker_died(self) -> None:
        worker = self._job.worker if self._job is not None else None
        who = f"worker {worker.id} (pid {worker.pid})" if worker is not None else "the worker"
        self._answer_error(500, f"{who} died while handling this request; it is being replaced")
