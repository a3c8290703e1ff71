"""One request to an endpoint, from its headers to the last byte of its answer.

``EndpointRequest`` is a Tornado ``HTTPMessageDelegate``: it sits right on Tornado's HTTP/1.1
connection instead of on a ``RequestHandler``. Every call to a model comes through here, and the
``RequestHandler`` layers (a handler object with its header bookkeeping, ``prepare``/``flush``/
``finish``, a coroutine per request) cost the serving thread more CPU than the whole round trip to
the worker (``docs/benchmarks.md``). Health, info, metrics and 404s stay ordinary handlers
(``litkit.server.handlers``).

The way through:

1. **Headers**: the access checks (Host, Origin, API key; ``litkit.server.access``; then the API's
   own ``authorize`` hook, ``litkit.server.authorization``) and the limits, all before any body is
   read: 401, 403, 405, 400 and 413 (by ``Content-Length``, ``litkit.server.headers``) and 431. A
   CORS preflight is answered here.
2. **Body**: gathered as it arrives, 413 past ``max_body_size`` (chunked uploads too).
3. **Queued**: a job in the endpoint's pool (503 when the queue is full or the server stops).
4. **Relayed**: once a worker starts the job, its response pipe is read whenever it is readable.
   A ``RESULT`` becomes the JSON body; ``CHUNK`` frames go out as NDJSON lines or SSE events as
   soon as they arrive, the frames of one read in one write; ``ERROR`` becomes an error status, or
   a final error line once streaming began.

Ending early, all through ``cancel``: the client leaves (an end of file before the answer's first
byte is first probed on HTTP/1.1, since a client that only half-closed still reads: see
``litkit.server.halfclose``); ``timeout`` passes before the first
response byte, or ``queue_timeout`` before a worker takes the request (504); the client reads nothing for ``client_timeout``; the server stops or
``Server.cancel`` is called (503). The job is dropped if queued, or its pipe closed if running.

Buffering is bounded: the pipe is read only while the socket has taken everything written so far,
so a client that stops reading stops its worker at a full pipe.
"""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import logging
import re
import secrets
import time
from typing import Any, Awaitable, cast

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.httputil import HTTPHeaders, RequestStartLine, ResponseStartLine

from ..contract import framing
from ..pool.channels import PipeClosed, PipeReader
from ..pool.jobs import Job, JobDropped, NoWorkers, QueueFull
from ..wire.forms import is_form, mark_form
from ..wire.protocol import FrameParser, Kind
from .access import KEY_CHALLENGE, PREFLIGHT_HEADERS, PREFLIGHT_REFUSED, AccessDenied, cors_headers
from .endpoints import EndpointState, ServingState
from .halfclose import Spare, SpareConnection, keep_spare
from .headers import BadHeader, accepts_gzip, content_length

__all__ = ["EndpointRoute", "EndpointRequest", "HEADER_LIMIT", "new_request_id", "error_body", "oversized_headers"]

logger = logging.getLogger("litkit.server")
access_logger = logging.getLogger("litkit.server.access")

# Request line and headers larger than this get 431; Tornado closes connections whose headers
# pass MAX_HEADER_BYTES (server.py) before reading them whole.
HEADER_LIMIT = 32 * 1024
# LitServer's gzip for JSON answers, as LitServe's GZipMiddleware(minimum_size=1000) does; level 6
# (zlib's default) rather than Starlette's 9: most of the saving for a fraction of the server's time.
GZIP_MIN_SIZE = 1000
GZIP_LEVEL = 6
# Past max_body_size, how much of a body refused with 413 is still read and dropped, so that the
# client reads the 413 and keeps its connection (see EndpointRequest._refuse_after_body).
_DISCARD_PAST_LIMIT = 8 * 1024 * 1024
# Headroom past max_body_size for the connection's own limit, so the request answers 413 first.
_BODY_LIMIT_SLACK = 256 * 1024
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Request ids made here: a random prefix per process, then a counter (no getrandom per request).
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)
_METHODS = ("POST", "OPTIONS")


def new_request_id(offered: str | None) -> str:
    """The client's ``X-Request-ID`` when it is sane (1-128 of ``A-Za-z0-9._:-``), else a fresh id."""
    if offered and _CLIENT_REQUEST_ID.fullmatch(offered):
        return offered
    return _fresh_id()


def _fresh_id() -> str:
    """An id no other request of this process has had."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


def error_body(endpoint: Any, status: int, message: str, request_id: str, detail: Any = None) -> dict[str, Any]:
    """An error answer's JSON for ``endpoint`` (its spec's envelope, or litkit's own; see
    ``litkit.contract.framing.error_body``, which a Ray replica uses too)."""
    return framing.error_body(getattr(endpoint, "spec", None), status, message, request_id, detail, getattr(endpoint, "litserve", False))


def error_json(endpoint: Any, status: int, message: str, request_id: str, detail: Any = None) -> bytes:
    """``error_body`` as bytes; compact for LitServer's endpoints, as FastAPI writes it."""
    body = error_body(endpoint, status, message, request_id, detail)
    return json.dumps(body, separators=(",", ":") if getattr(endpoint, "litserve", False) else None).encode()


def oversized_headers(method: str, uri: str, headers: HTTPHeaders) -> str | None:
    """The 431 message when a request line and headers pass ``HEADER_LIMIT`` bytes, else None."""
    size = len(method) + len(uri) + sum(len(name) + len(value) + 4 for name, value in headers.get_all())
    if size <= HEADER_LIMIT:
        return None
    return f"request headers of {size} bytes exceed {HEADER_LIMIT} bytes; send smaller headers"


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


class EndpointRoute(httputil.HTTPServerConnectionDelegate):
    """The routing target of one endpoint's path: a fresh ``EndpointRequest`` for each request."""

    def __init__(self, endpoint: EndpointState, serving: ServingState) -> None:
        """Made on the server's loop, which every request of the endpoint then uses."""
        self.endpoint = endpoint
        self.serving = serving
        self.loop = asyncio.get_running_loop()

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> EndpointRequest:
        return EndpointRequest(self.endpoint, self.serving, cast(HTTP1Connection, request_conn), self.loop)


class EndpointRequest(httputil.HTTPMessageDelegate):
    """One request to an endpoint (see the module docstring for its way through)."""

    # One of these lives per request in flight: slots keep it small and its attributes quick.
    __slots__ = (
        "endpoint", "serving", "_connection", "request_id", "_method", "_uri", "_arrived", "_body",
        "_body_size", "_cors_origin", "_sse", "_job", "_pipe", "_parser", "_status", "_streaming",
        "_finished", "_gone", "_released", "_loop", "_timeout_handle", "_write_deadline", "_own_id", "_queue_handle", "_form_type",
        "_version", "_spare", "_deferred", "_gzip",
    )

    def __init__(self, endpoint: EndpointState, serving: ServingState, connection: HTTP1Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.endpoint = endpoint
        self.serving = serving
        # Tornado's connection; a SpareConnection once a client that half-closed is answered.
        self._connection: HTTP1Connection | SpareConnection = connection
        self.request_id = ""
        self._own_id = True  # request_id was made here (no usable X-Request-ID)
        self._method = ""
        self._uri = ""
        self._arrived = 0.0
        self._body: list[bytes] = []
        self._body_size = 0
        self._cors_origin: str | None = None
        self._sse = False
        self._job: Job | None = None
        self._pipe: PipeReader | None = None
        self._parser = FrameParser()
        self._status = 0  # the answer's status, once its headers are written
        self._streaming = False  # chunk headers written
        self._finished = False  # the whole answer written (or the connection is gone)
        self._gone = False  # cancelled: the client left, a timeout, a stop or Server.cancel
        self._released = False
        self._loop = loop
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._write_deadline: asyncio.TimerHandle | None = None
        self._queue_handle: asyncio.TimerHandle | None = None
        self._form_type: str | None = None  # the Content-Type of an HTML form body (litkit.wire.forms)
        self._version = ""  # the request's HTTP version
        self._spare: Spare | None = None  # a second handle on the connection (litkit.server.halfclose)
        self._gzip = False  # LitServer: a JSON answer of GZIP_MIN_SIZE bytes or more goes out gzipped
        self._deferred: tuple[int, str, Any] | None = None  # a refusal sent once its body is read (_refuse_after_body)

    # -- the request arrives (called by Tornado's HTTP1Connection) --------------------------------

    def headers_received(self, start_line: RequestStartLine | ResponseStartLine, headers: HTTPHeaders) -> Awaitable[None] | None:
        self._arrived = time.monotonic()
        start_line = cast(RequestStartLine, start_line)
        self._method = method = start_line.method
        self._version = start_line.version
        self._uri = start_line.path
        offered = headers.get("X-Request-ID")
        self.request_id = new_request_id(offered)
        self._own_id = self.request_id != offered
        self._sse = self.endpoint.always_sse or "text/event-stream" in headers.get("Accept", "")
        self._gzip = self.endpoint.litserve and accepts_gzip(headers.get("Accept-Encoding"))
        policy = self.serving.access
        host = headers.get("Host", "")
        try:
            policy.check_host(host)
            self._cors_origin = policy.allowed_origin(headers.get("Origin"), host)
            if method == "OPTIONS":
                self._answer_preflight()
                return None
            if method not in _METHODS:
                self._refuse_after_body(headers, 405, f"{method} is not allowed on {self.endpoint.path}; send a POST with a JSON body")
                return None
            policy.check_key(headers)
            if self.endpoint.authorize is not None:  # the API's own authorize() hook
                self.endpoint.authorize(headers, method, self._uri)
        except AccessDenied as denied:
            self._refuse_after_body(headers, denied.status, denied.message, denied.detail)
            return None
        content_type = headers.get("Content-Type")
        if content_type is not None and is_form(content_type):
            self._form_type = content_type
        too_large = oversized_headers(method, self._uri, headers)
        if too_large is not None:
            self._refuse(431, too_large)
            return None
        limit = self.endpoint.max_body_size
        try:
            content_length(headers.get("Content-Length"), limit)
        except BadHeader as bad:
            if bad.status == 413:
                self._refuse_after_body(headers, 413, bad.message, discard=limit + _DISCARD_PAST_LIMIT)
            else:
                self._refuse(bad.status, bad.message, self._closing_headers())
            return None
        # Bound chunked uploads too; this request refuses with 413 before the connection's limit trips.
        self._connection.set_max_body_size(limit + _BODY_LIMIT_SLACK)
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._status or self._deferred is not None:
            return None  # refused (or answered already): the rest is read and dropped
        self._body_size += len(chunk)
        if self._body_size > self.endpoint.max_body_size:
            self._refuse_too_large(self._body_size)
            return None
        self._body.append(chunk)
        return None

    def finish(self) -> None:
        """The whole body is in: queue the job (or send the refusal that waited for it)."""
        if self._status or self._connection.stream.closed():
            return  # answered already, or the client left as its body arrived: nothing to run
        if self._deferred is not None:
            status, message, detail = self._deferred
            self._refuse(status, message, detail=detail)
            return
        # A re-run may have switched versions while the body arrived: the request is new, so the
        # version serving its path now takes it (litkit.server.loop.ServerLoop.replace).
        endpoint = self.endpoint = self.endpoint.serving_now()
        if endpoint.stopping:
            self._refuse(503, "the server is stopping; it takes no new requests")
            return
        record = endpoint.tracker.admit(self.request_id, self._uri)
        record.arrived = self._arrived
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        if self._form_type is not None:
            body = mark_form(self._form_type, body)  # the worker parses the form
        self._body = []
        # The job's key on the wire is ours: a client's X-Request-ID may repeat (two requests in
        # flight with one id), so it is echoed, never used to match a worker's DONE.
        job = Job(record, body, key=None if self._own_id else _fresh_id())
        try:
            endpoint.pool.submit(job)
        except (QueueFull, NoWorkers) as error:
            endpoint.tracker.finish(record, "failed", str(error))
            self._refuse(503, str(error))
            return
        self._job = job
        endpoint.active.add(self)
        connection = cast(HTTP1Connection, self._connection)
        self._spare = keep_spare(connection.stream, self._version, self._loop, connection.context)
        connection.set_close_callback(self._on_end_of_file)
        if endpoint.timeout is not None:
            # asyncio's clock is time.monotonic(), the one _arrived was read from.
            self._timeout_handle = self._loop.call_at(self._arrived + endpoint.timeout, self._on_timeout)
        if endpoint.queue_timeout is not None and not job.assigned.done():
            self._queue_handle = self._loop.call_at(self._arrived + endpoint.queue_timeout, self._on_queue_timeout)
        if job.assigned.done():  # a worker was free: its pipe is there already
            self._on_assigned(job.assigned)
        else:
            job.assigned.add_done_callback(self._on_assigned)

    @property
    def arrived(self) -> float:
        """When the request's head arrived (``time.monotonic()``)."""
        return self._arrived

    def on_connection_close(self) -> None:
        """The connection closed while the request was still arriving."""
        self._on_client_left()

    def _on_end_of_file(self) -> None:
        """Tornado read end of file (or a reset) and closed its side while the answer was pending.
        Before the answer's first byte the client may only have half-closed: probe on the spare,
        and answer there unless the probe shows it gone. Once the answer began, it is a hang-up."""
        if self._released or isinstance(self._connection, SpareConnection):
            return  # settled already, by _answer_can_begin before this callback came
        spare = self._spare
        if spare is not None and not self._status and not self._gone:
            connection = spare.probe(self._on_spare_hung_up)
            if connection is not None:
                self._connection = connection
                return
        self._on_client_left()

    def _answer_can_begin(self) -> bool:
        """Before the answer's first byte: whether the client is still there to take it. Tornado
        closes its side the moment it reads end of file but calls ``_on_end_of_file`` a turn of the
        loop later, so an answer ready in between would go to a closed stream: that end of file is
        settled now (the callback then finds nothing to do)."""
        if self._spare is not None and not isinstance(self._connection, SpareConnection) and self._connection.stream.closed():
            self._on_end_of_file()
        return not self._released

    def _on_spare_hung_up(self) -> None:
        """A reset or a failed write on the spare: the client that half-closed has gone."""
        if not self._released:
            self._on_client_left()

    # -- relaying the worker's answer ---------------------------------------------------------------

    def _on_assigned(self, assigned: asyncio.Future[PipeReader]) -> None:
        self._clear_queue_timeout()
        if assigned.cancelled() or self._gone:
            return
        error = assigned.exception()
        if isinstance(error, NoWorkers):
            self._answer_error(503, str(error))
            return
        if error is not None:  # JobDropped: cancelled while queued, answered by whoever dropped it
            if not isinstance(error, JobDropped):
                logger.error("request %s could not start: %r", self.request_id, error)
                self._answer_error(500, f"the request could not start: {error}")
            return
        self._pipe = assigned.result()
        # Nothing to read yet: the worker has only just been handed the request.
        self._pipe.watch(self._on_pipe_readable)

    def _on_pipe_readable(self) -> None:
        try:
            self._relay()
        except Exception as error:  # noqa: BLE001 - a fault here must not leave the client hanging
            logger.exception("relaying request %s failed", self.request_id)
            if not self._finished:
                self._answer_error(500, f"the server failed while relaying the answer: {error!r}")

    def _relay(self) -> None:
        """Read what the pipe holds and write it on, until the pipe is empty, the answer is
        complete, or the socket has not taken the last write (then wait for it)."""
        pipe = self._pipe
        if pipe is None:
            return
        data = b""
        while not self._finished:
            # Until the first chunk is out, take one frame at a time: a fast generator can fill the
            # pipe before the first read, and the first chunk must not wait for the rest to be parsed.
            frames = self._parser.feed(data, limit=None if self._streaming else 1)
            data = b""
            if not frames:
                try:
                    more = pipe.read_available()
                except PipeClosed:
                    if not self._gone:  # end of file with no final frame: the worker died
                        self._worker_died()
                    return
                if more is None:
                    pipe.watch(self._on_pipe_readable)
                    return
                data = more
                continue
            self._write_frames(frames)
            if not self._finished and self._connection.stream.writing():
                pipe.unwatch()  # the client lags: read no more until it catches up
                self._wait_for_write()
                return

    def _write_frames(self, frames: list[tuple[Kind, bytes]]) -> None:
        """Write what the frames say; the chunks among them, and the stream's end, in one write."""
        record = self._job.record  # type: ignore[union-attr]
        out: list[bytes] = []
        for kind, payload in frames:
            if kind == Kind.CHUNK:
                record.chunks += 1
                if not self.endpoint.litserve and framing.splits_line(payload, self._sse):  # JSON chunks have no newline; text might
                    if out:
                        self._send_stream(out)
                    self._answer_error(500, framing.split_line_message(record.chunks))
                    return
                out.append(framing.frame_chunk(payload, self._sse, self.endpoint.litserve))
            elif kind == Kind.RESULT:
                self._clear_timeout()
                self.endpoint.tracker.finish(record, "completed")
                if self._gzip and len(payload) >= GZIP_MIN_SIZE:  # as LitServe's GZipMiddleware (never a stream)
                    headers = self._headers("application/json")
                    headers["Content-Encoding"] = "gzip"
                    headers["Vary"] = "Accept-Encoding"
                    self._respond(200, gzip.compress(payload, GZIP_LEVEL), headers)
                    return
                self._respond(200, payload)
                return
            elif kind == Kind.END:
                self.endpoint.tracker.finish(record, "completed")
                if self._sse:
                    out.append(framing.SSE_DONE)
                self._send_stream(out)
                self._complete()
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
        if self._streaming:
            if data:
                self._connection.write(data)
            return
        if not self._answer_can_begin():
            return  # the client left
        self._streaming = True
        self._job.record.first_chunk_at = time.monotonic()  # type: ignore[union-attr]
        self._clear_timeout()
        headers = self._headers(framing.SSE if self._sse else framing.NDJSON)
        headers["Cache-Control"] = "no-cache"
        headers["X-Accel-Buffering"] = "no"
        self._connection.stream.set_nodelay(True)
        self._status = 200
        self._connection.write_headers(ResponseStartLine("HTTP/1.1", 200, "OK"), headers, data)

    def _wait_for_write(self) -> None:
        """Go on once the socket took everything written so far; cut the client off if it reads
        nothing for ``client_timeout``."""
        stream = self._connection.stream
        if stream.closed():
            self._on_client_left()
            return
        if self._write_deadline is None:
            self._write_deadline = self._loop.call_later(self.serving.client_timeout, self._on_write_stalled)
        # IOStream resolves a write's future once every byte before it is sent: an empty write
        # is the drain signal.
        stream.write(b"").add_done_callback(self._on_written)

    def _on_written(self, drained: asyncio.Future[None]) -> None:
        if not drained.cancelled():
            drained.exception()  # a client that left fails the write: handled just below
        if self._released:
            return
        stream = self._connection.stream
        if stream.closed():
            self._on_client_left()
        elif stream.writing():
            self._wait_for_write()
        else:
            self._clear_write_deadline()
            if self._finished:
                self._release()
            else:
                self._relay()

    def _on_write_stalled(self) -> None:
        self._write_deadline = None
        if self._released:
            return
        self.cancel(f"client read nothing for client_timeout={self.serving.client_timeout:g}s after {{chunks}} chunks", "cancelled")
        self._release()
        self._connection.stream.close()  # what it would have buffered is dropped

    # -- answers ----------------------------------------------------------------------------------

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
        if not self._answer_can_begin():
            return  # the client left
        if headers is None:
            headers = self._headers("application/json")
        headers["Content-Length"] = str(len(body))
        self._status = status
        reason = httputil.responses.get(status, "Unknown")
        self._connection.write_headers(ResponseStartLine("HTTP/1.1", status, reason), headers, body)
        self._complete()

    def _complete(self) -> None:
        """The answer is all written: end the HTTP message, close the pipe, and release this
        request once the socket took it all (or the client is cut off after ``client_timeout``)."""
        if self._released:
            return  # the client left before the answer could begin (_answer_can_begin)
        self._finished = True
        self._connection.finish()
        if self._job is not None:
            self._job.close_pipe()
        if self._job is not None and self._connection.stream.writing():
            self._wait_for_write()
        else:
            self._release()
        if access_logger.isEnabledFor(logging.DEBUG):
            access_logger.debug("%d %s %s %.2fms", self._status, self._method, self._uri, 1000 * (time.monotonic() - self._arrived))

    def _refuse(self, status: int, message: str, headers: HTTPHeaders | None = None, detail: Any = None) -> None:
        """Answer an error before any work started (a check failed, or the queue is full)."""
        access_logger.info("%d %s %s (%s): %s", status, self._method, self._uri, self._connection.context, message)
        if headers is None:
            headers = self._headers("application/json")
        if status == 401:
            headers["WWW-Authenticate"] = KEY_CHALLENGE
        elif status == 405:
            headers["Allow"] = ", ".join(_METHODS)
        self._respond(status, error_json(self.endpoint, status, message, self.request_id, detail), headers)

    def _refuse_after_body(self, headers: HTTPHeaders, status: int, message: str, detail: Any = None, discard: int | None = None) -> None:
        """Refuse a request before its body is read, but answer once the body is read and dropped:
        a server that answers and closes while the client still sends makes the client's system
        reset the connection, and the client may never read the answer (nor reuse the connection).
        A body that announces more than ``discard`` bytes (default ``max_body_size``) is not worth
        reading: that refusal goes out at once, with ``Connection: close``."""
        limit = self.endpoint.max_body_size if discard is None else discard
        try:
            announced = content_length(headers.get("Content-Length"), limit)
        except BadHeader:
            self._refuse(status, message, self._closing_headers(), detail)
            return
        if announced == 0 or (announced is None and "chunked" not in headers.get("Transfer-Encoding", "").lower()):
            self._refuse(status, message, detail=detail)  # no body: nothing to wait for
            return
        self._deferred = (status, message, detail)
        self._connection.set_max_body_size(limit + _BODY_LIMIT_SLACK)

    def _closing_headers(self) -> HTTPHeaders:
        headers = self._headers("application/json")
        headers["Connection"] = "close"  # the unread body ends this connection (Tornado closes it)
        return headers

    def _refuse_too_large(self, size: int) -> None:
        self._refuse(
            413,
            f"request body of {size} bytes exceeds max_body_size={self.endpoint.max_body_size} bytes; "
            "send less, or serve with a larger max_body_size",
        )

    def _answer_preflight(self) -> None:
        """A CORS preflight from an allowed origin (the Origin check refused the others)."""
        if self._cors_origin is None:
            self._refuse(400, PREFLIGHT_REFUSED)
            return
        headers = self._headers(None)
        for name, value in PREFLIGHT_HEADERS:
            headers[name] = value
        self._status = 204
        self._connection.write_headers(ResponseStartLine("HTTP/1.1", 204, "No Content"), headers)
        self._complete()

    def _answer_error(self, status: int, message: str, traceback_text: str | None = None, detail: Any = None) -> None:
        """A failed request: count it, log a hook's traceback, and tell the client (``detail``: a
        ``fastapi.HTTPException``'s, which the body carries too, as LitServe's does)."""
        self._clear_timeout()
        job = self._job
        if job is not None:
            self.endpoint.tracker.finish(job.record, "failed", message)
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
        if not self._streaming:
            self._respond(status, body)
            return
        self._send_stream([framing.stream_error(body, self._sse)])
        self._complete()

    def _worker_died(self) -> None:
        worker = self._job.worker if self._job is not None else None
        who = f"worker {worker.id} (pid {worker.pid})" if worker is not None else "the worker"
        self._answer_error(500, f"{who} died while handling this request; it is being replaced")

    # -- ending early: disconnect, timeout, stop --------------------------------------------------

    def _on_client_left(self) -> None:
        self._finished = True  # nothing more can be written
        self.cancel("client left after {chunks} chunks", "cancelled")
        self._release()

    def _on_timeout(self) -> None:
        self._timeout_handle = None
        if self._streaming or self._gone or self._finished or self._job is None:
            return
        message = f"no response within timeout={self.endpoint.timeout:g}s"
        self.cancel(message, "timed_out")
        self._end_with_error(504, message + "; serve with a larger timeout if this is expected")

    def _on_queue_timeout(self) -> None:
        self._queue_handle = None
        if self._gone or self._finished or self._job is None or self._job.assigned.done():
            return
        message = f"the request waited in the queue for more than queue_timeout={self.endpoint.queue_timeout:g}s"
        self.cancel(message, "timed_out")
        self._end_with_error(504, message + "; add workers, or serve with a larger queue_timeout")

    def cancel(self, reason: str, state: str = "cancelled") -> None:
        """End this request early: count it, and stop its work (dropped if queued, pipe closed if running)."""
        job = self._job
        if self._gone or job is None:
            return
        self._gone = True
        self._clear_timeout()
        self._clear_queue_timeout()
        self.endpoint.tracker.finish(job.record, state, reason.format(chunks=job.record.chunks))
        self.endpoint.pool.cancel(job)

    def abort_for_stop(self) -> None:
        """The server is stopping: cancel the work and end the answer if the client is still there."""
        self.abort("cancelled: the server stopped", "the server stopped before this request finished")

    def abort(self, reason: str, message: str) -> None:
        """Cancel from the server's side (a stop, ``Server.cancel``): the work stops exactly as on a
        disconnect, and a client still there gets a 503, or a final error line if streaming began."""
        if self._gone:
            return
        self.cancel(reason, "cancelled")
        if self._finished or self._connection.stream.closed():
            self._release()
            return
        self._end_with_error(503, message)

    def _release(self) -> None:
        """This request is over for the server: no timers, no pipe, out of the endpoint's in-flight set."""
        if self._released:
            return
        self._released = True
        self._clear_timeout()
        self._clear_queue_timeout()
        self._clear_write_deadline()
        if self._job is not None:
            self._job.close_pipe()
        if self._spare is not None:
            self._spare.close()
            self._spare = None
        self.endpoint.active.discard(self)

    def _clear_timeout(self) -> None:
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
            self._timeout_handle = None

    def _clear_queue_timeout(self) -> None:
        if self._queue_handle is not None:
            self._queue_handle.cancel()
            self._queue_handle = None

    def _clear_write_deadline(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None
