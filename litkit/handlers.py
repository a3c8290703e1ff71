"""Tornado request handlers: each endpoint (plain and streaming), health, info, metrics, and JSON errors.

The HTTP layer knows the pool and the tracker, nothing about widgets. A predict request is read
whole (refused with 413 past ``max_body_size`` before any more is read), queued in the pool, and
relayed from its response pipe: a ``RESULT`` becomes the JSON body; ``CHUNK`` frames go out as
NDJSON lines or SSE events, flushed as soon as they arrive (chunks that arrive together go out in
one write). A client that leaves, a ``timeout`` that passes before the first response byte, or a
client that stops reading for ``client_timeout``, cancels the job.

Buffering is bounded: the relay reads the next frames from the pipe only once the previous ones
were written to the socket, so a client that stops reading stops its worker at a full pipe.

Every request first passes the access checks (``litkit.access``): Host, Origin, API key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import itertools
import secrets
import time
from typing import TYPE_CHECKING, Any, cast

import tornado.web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from .access import CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS, CORS_MAX_AGE_S, AccessDenied
from .channels import PipeClosed, PipeReader
from .metrics import render_metrics
from .pool import Job, JobDropped, NoWorkers, QueueFull
from .protocol import FrameParser, Kind

if TYPE_CHECKING:
    from .endpoints import EndpointState, ServingState

__all__ = ["make_application"]

logger = logging.getLogger("litkit.server")
access_logger = logging.getLogger("litkit.access")

_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Request ids made here: a random prefix per process, then a counter (no getrandom per request).
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)
# Headroom past max_body_size for the connection's own limit, so the handler answers 413 first.
_BODY_LIMIT_SLACK = 256 * 1024
# Request line and headers larger than this get 431; Tornado closes connections whose headers
# pass MAX_HEADER_BYTES (server.py) before reading them whole.
HEADER_LIMIT = 32 * 1024


def make_application(serving: ServingState) -> tornado.web.Application:
    options = {"state": serving, "serving": serving}
    routes: list[Any] = [
        (r"/health", HealthHandler, options),
        (r"/info", InfoHandler, options),
        (r"/metrics", MetricsHandler, options),
    ]
    for endpoint in serving.endpoints:
        routes.append((re.escape(endpoint.path), PredictHandler, {"state": endpoint, "serving": serving}))
        for name, path in endpoint.extra_paths.items():
            routes.append((re.escape(path), SpecGetHandler, {"state": endpoint, "serving": serving, "name": name}))
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        default_handler_args=options,
        log_function=_log_request,
        compress_response=False,
    )


def _log_request(handler: tornado.web.RequestHandler) -> None:
    if access_logger.isEnabledFor(logging.DEBUG):
        request = handler.request
        access_logger.debug("%d %s %s %.2fms", handler.get_status(), request.method, request.uri, 1000 * request.request_time())


class JSONHandler(tornado.web.RequestHandler):
    """Every answer is JSON and carries ``X-Request-ID`` (the client's, when it sent a sane one).

    ``prepare`` runs the access checks before anything else (the body of a streamed-body handler
    is not read yet): Host, then Origin, then, unless the handler is ``open`` or this is a CORS
    preflight, the API key.
    """

    state: Any  # the ServingState, or for an endpoint's handlers its EndpointState
    open = False  # True: no API key needed (health)

    def initialize(self, state: Any, serving: ServingState) -> None:
        self.state = state
        self.serving = serving

    def prepare(self) -> None:
        request = self.request
        policy = self.serving.access
        host = request.headers.get("Host", "")
        try:
            policy.check_host(host)
            self._cors_origin = policy.allowed_origin(request.headers.get("Origin"), host)
            self._set_cors_headers()
            if request.method == "OPTIONS":
                return  # a preflight carries no credentials; options() answers it
            if not self.open:
                policy.check_key(request.headers)
        except AccessDenied as denied:
            raise self.error(denied.status, denied.message) from None
        size = len(request.method or "") + len(request.uri or "") + sum(len(k) + len(v) + 4 for k, v in request.headers.get_all())
        if size > HEADER_LIMIT:
            raise self.error(431, f"request headers of {size} bytes exceed {HEADER_LIMIT} bytes; send smaller headers")

    def _set_cors_headers(self) -> None:
        origin = getattr(self, "_cors_origin", None)
        if origin is not None:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Access-Control-Expose-Headers", "X-Request-ID")
            self.add_header("Vary", "Origin")

    def options(self, *args: Any) -> None:
        """A CORS preflight from an allowed origin (prepare refused the others)."""
        if getattr(self, "_cors_origin", None) is None:
            raise self.error(400, "OPTIONS is only answered as a CORS preflight from an allowed Origin")
        self.set_header("Access-Control-Allow-Methods", CORS_ALLOW_METHODS)
        self.set_header("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS)
        self.set_header("Access-Control-Max-Age", str(CORS_MAX_AGE_S))
        self.set_status(204)
        self.finish()

    @property
    def request_id(self) -> str:
        request_id = getattr(self, "_request_id", None)
        if request_id is None:
            offered = self.request.headers.get("X-Request-ID", "")
            request_id = offered if _CLIENT_REQUEST_ID.fullmatch(offered) else f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"
            self._request_id = request_id
        return request_id

    def set_default_headers(self) -> None:
        self.set_header("X-Request-ID", self.request_id)

    def write_json(self, status: int, value: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(error, "log_message", None) or self._reason
        # send_error cleared the headers: an allowed page may read the error too.
        self._set_cors_headers()
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="litkit"')
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.error_body(status_code, message)))

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        spec = getattr(self.state, "spec", None)
        if spec is not None:
            return spec.error_body(status, message, self.request_id)  # type: ignore[no-any-return]
        return {"error": message, "request_id": self.request_id}

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        # A refused request (404, 413, 503...) is the client's business, not a warning on the
        # operator's terminal: Tornado would log each one to tornado.general at WARNING.
        if isinstance(value, tornado.web.HTTPError):
            access_logger.info("%d %s: %s", value.status_code, self._request_summary(), value.log_message)
        else:
            super().log_exception(typ, value, tb)

    def error(self, status: int, message: str) -> tornado.web.HTTPError:
        """A tornado HTTPError whose message becomes the JSON ``error`` field."""
        return tornado.web.HTTPError(status, message)  # no args, so Tornado never %-formats it


class NotFoundHandler(JSONHandler):
    state: ServingState

    def prepare(self) -> None:
        super().prepare()
        endpoints = self.state.endpoints
        where = f"the API is at POST {endpoints[0].path}" if len(endpoints) == 1 else "the endpoints are " + ", ".join(f"POST {e.path}" for e in endpoints)
        raise self.error(404, f"no endpoint at {self.request.path}; {where}")


class HealthHandler(JSONHandler):
    state: ServingState
    open = True

    def get(self) -> None:
        ok, reason = self.state.health()
        if ok:
            self.write_json(200, {"status": "ok"})
        else:
            self.write_json(503, {"status": "unavailable", "reason": reason})


class InfoHandler(JSONHandler):
    state: ServingState

    def get(self) -> None:
        self.write_json(200, self.state.info())


class MetricsHandler(JSONHandler):
    """``GET /metrics``: Prometheus text exposition format."""

    state: ServingState

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(render_metrics(self.state))


class SpecGetHandler(JSONHandler):
    """A GET path a spec adds, e.g. OpenAI's ``/v1/models``."""

    state: EndpointState

    def initialize(self, state: Any, serving: ServingState, name: str = "") -> None:  # type: ignore[override]
        super().initialize(state, serving)
        self.name = name

    def get(self) -> None:
        endpoint = self.state
        if endpoint.spec is None:
            raise RuntimeError(f"{endpoint.path} has no spec to answer GET {self.request.path}")
        self.write_json(200, endpoint.spec.extra_response(self.name, endpoint.model, endpoint.created))


@tornado.web.stream_request_body
class PredictHandler(JSONHandler):
    SUPPORTED_METHODS = ("POST", "OPTIONS")
    state: EndpointState

    def prepare(self) -> None:
        self._arrived = time.monotonic()
        self._body: list[bytes] = []
        self._body_size = 0
        self._job: Job | None = None
        self._headers_sent = False
        self._gone = False  # the client left, or the request was answered by a timeout or a stop
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._sse = self.state.always_sse or "text/event-stream" in self.request.headers.get("Accept", "")
        super().prepare()  # the access checks, once this handler can answer a hang-up
        limit = self.state.max_body_size
        length = self.request.headers.get("Content-Length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise self._too_large(int(length))
        # Bound chunked uploads too; the handler refuses with 413 before this connection limit trips.
        self._connection.set_max_body_size(limit + _BODY_LIMIT_SLACK)

    @property
    def _connection(self) -> HTTP1Connection:
        return cast(HTTP1Connection, self.request.connection)

    def _too_large(self, size: int) -> tornado.web.HTTPError:
        return self.error(
            413,
            f"request body of {size} bytes exceeds max_body_size={self.state.max_body_size} bytes; "
            "send less, or serve with a larger max_body_size",
        )

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._body_size += len(chunk)
        if self._body_size > self.state.max_body_size:
            self.send_error(413, exc_info=(None, self._too_large(self._body_size), None))
            return
        self._body.append(chunk)

    async def post(self) -> None:
        if self._finished or self._connection.stream.closed():
            return  # answered already (413), or the client left as its body arrived: nothing to run
        state = self.state
        if state.stopping:
            raise self.error(503, "the server is stopping; it takes no new requests")
        record = state.tracker.admit(self.request_id, self.request.path)
        record.arrived = self._arrived
        job = Job(record, b"".join(self._body))
        self._body.clear()
        try:
            state.pool.submit(job)
        except (QueueFull, NoWorkers) as error:
            state.tracker.finish(record, "failed", str(error))
            raise self.error(503, str(error)) from None
        self._job = job
        state.active.add(self)
        try:
            if state.timeout is not None:
                # asyncio's clock is time.monotonic(), the one _arrived was read from.
                self._timeout_handle = asyncio.get_running_loop().call_at(self._arrived + state.timeout, self._on_timeout)
            try:
                pipe = await job.assigned
            except NoWorkers as error:
                _consume_error(self._answer_error(job, 503, str(error)))
                return
            except JobDropped:
                return
            await self._relay(job, pipe)
        finally:
            state.active.discard(self)
            self._clear_timeout()

    # -- relaying the worker's frames -------------------------------------------------------------

    async def _relay(self, job: Job, pipe: PipeReader) -> None:
        parser = FrameParser()
        data = b""
        while not self._gone:
            # Until the first chunk is out, take one frame at a time: a fast generator can fill the
            # pipe before the first read, and the first chunk must not wait for the rest to be parsed.
            frames = parser.feed(data, limit=None if self._headers_sent else 1)
            data = b""
            if not frames:
                try:
                    data = await pipe.read()
                except PipeClosed:
                    if not self._gone:  # end of file with no final frame: the worker died
                        self._worker_died(job)
                    return
                continue
            written = self._handle_frames(job, frames)
            if written is not None:
                job.close_pipe()
                await self._within_write_deadline(written)
                return
            if self._headers_sent and not await self._within_write_deadline(self.flush()):
                return

    async def _within_write_deadline(self, written: asyncio.Future[None]) -> bool:
        """Wait until ``written`` (a flush or finish) is on the wire; False if the client left or
        read nothing for ``client_timeout`` seconds, in which case the request is cancelled and the
        connection closed (what it would have buffered is dropped)."""
        client_timeout = self.serving.client_timeout
        if not written.done():  # usually done already: the socket took the bytes at once
            await asyncio.wait({written}, timeout=client_timeout)
        if not written.done():
            _consume_error(written)
            self.cancel(f"client read nothing for client_timeout={client_timeout:g}s after {{chunks}} chunks", "cancelled")
            self._connection.stream.close()
            return False
        try:
            written.result()
        except StreamClosedError:
            self.cancel("client left after {chunks} chunks", "cancelled")
            return False
        return True

    def _handle_frames(self, job: Job, frames: list[tuple[Kind, bytes]]) -> asyncio.Future[None] | None:
        """Write what the frames say; once the response is complete, the future of its last write."""
        record = job.record
        for kind, payload in frames:
            if kind == Kind.CHUNK:
                self._start_stream()
                record.chunks += 1
                self.write(self._format_chunk(payload))
            elif kind == Kind.RESULT:
                self._clear_timeout()
                self.state.tracker.finish(record, "completed")
                self.set_header("Content-Type", "application/json")
                return self.finish(payload)
            elif kind == Kind.END:
                self._start_stream()
                self.state.tracker.finish(record, "completed")
                if self._sse:
                    self.write(b"data: [DONE]\n\n")
                return self.finish()
            elif kind == Kind.ERROR:
                report = json.loads(payload)
                return self._answer_error(job, report["status"], report["error"], report.get("traceback"))
        return None

    def _start_stream(self) -> None:
        if self._headers_sent:
            return
        self._headers_sent = True
        self._job.record.first_chunk_at = time.monotonic()  # type: ignore[union-attr]
        self._clear_timeout()
        self.set_header("Content-Type", "text/event-stream" if self._sse else "application/x-ndjson")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        self._connection.stream.set_nodelay(True)

    def _format_chunk(self, payload: bytes) -> bytes:
        if not self._sse:
            return payload + b"\n"
        if b"\n" not in payload:
            return b"data: " + payload + b"\n\n"
        return b"".join(b"data: " + line + b"\n" for line in payload.split(b"\n")) + b"\n"

    def _answer_error(self, job: Job, status: int, message: str, traceback_text: str | None = None) -> asyncio.Future[None]:
        self._clear_timeout()
        self.state.tracker.finish(job.record, "failed", message)
        if traceback_text:
            # A client's bad input (4xx from decode_request) is not the operator's alarm.
            level = logging.ERROR if status >= 500 else logging.INFO
            logger.log(level, "request %s failed in a hook:\n%s", self.request_id, traceback_text.rstrip())
            # Into the dashboard's log panel too; the logger line above already reported it.
            worker_id = job.worker.id if job.worker is not None else -1
            self.state.pool.log.add(worker_id, "traceback", f"request {self.request_id} failed:\n{traceback_text.rstrip()}", to_logger=False)
        return self._end_with_error(status, message)

    def _end_with_error(self, status: int, message: str) -> asyncio.Future[None]:
        """An error status before the first chunk; a final error line or SSE event after it."""
        error = self.error_body(status, message)
        if not self._headers_sent:
            self.set_status(status)
            self.set_header("Content-Type", "application/json")
            return self.finish(json.dumps(error))
        body = json.dumps(error).encode()
        return self.finish(b"event: error\ndata: " + body + b"\n\n" if self._sse else body + b"\n")

    def _worker_died(self, job: Job) -> None:
        worker = job.worker
        who = f"worker {worker.id} (pid {worker.pid})" if worker is not None else "the worker"
        _consume_error(self._answer_error(job, 500, f"{who} died while handling this request; it is being replaced"))

    # -- ending early: disconnect, timeout, stop --------------------------------------------------

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self.cancel("client left after {chunks} chunks", "cancelled")

    def _on_timeout(self) -> None:
        self._timeout_handle = None
        if self._headers_sent or self._gone or self._job is None:
            return
        message = f"no response within timeout={self.state.timeout:g}s"
        self.cancel(message, "timed_out")
        _consume_error(self._end_with_error(504, message + "; serve with a larger timeout if this is expected"))

    def cancel(self, reason: str, state: str = "cancelled") -> None:
        """End this request early: count it, and stop its work (dropped if queued, pipe closed if running)."""
        job = self._job
        if self._gone or job is None:
            return
        self._gone = True
        self._clear_timeout()
        self.state.tracker.finish(job.record, state, reason.format(chunks=job.record.chunks))
        self.state.pool.cancel(job)

    def abort_for_stop(self) -> None:
        """The server is stopping: cancel the work and end the response if the client is still there."""
        self.abort("cancelled: the server stopped", "the server stopped before this request finished")

    def abort(self, reason: str, message: str) -> None:
        """Cancel from the server's side (a stop, ``Server.cancel``): the work stops exactly as on a
        disconnect, and a client still there gets a 503, or a final error line if streaming began."""
        if self._gone:
            return
        self.cancel(reason, "cancelled")
        if self._finished or self._connection.stream.closed():
            return
        _consume_error(self._end_with_error(503, message))

    def _clear_timeout(self) -> None:
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
            self._timeout_handle = None


def _consume_error(future: asyncio.Future[Any]) -> None:
    """Mark a write's outcome as seen: a client that left makes it fail, which is no news."""

    def consume(done: asyncio.Future[Any]) -> None:
        if not done.cancelled():
            done.exception()

    future.add_done_callback(consume)
