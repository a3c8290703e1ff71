"""One request to an endpoint, from its headers to the last byte of its answer.

``EndpointRequest`` is a Tornado ``HTTPMessageDelegate``: it sits right on Tornado's HTTP/1.1
connection instead of on a ``RequestHandler``. Every call to a model comes through here, and the
``RequestHandler`` layers (a handler object with its header bookkeeping, ``prepare``/``flush``/
``finish``, a coroutine per request) cost the serving thread more CPU than the whole round trip to
the worker (``docs/benchmarks.md``). Health, info, metrics and 404s stay ordinary handlers
(``litkit.server.handlers``).

A request's life is one ``Phase`` (``litkit.server.phases``: the phases and the moves allowed),
changed only by ``EndpointRequest._move``. The pieces it is made of:

- **access**: ``litkit.server.access.check_access``, the checks every handler runs in one order;
- **admission**: ``litkit.server.admission``, the request id, the header and body limits, and the
  job's submit to the endpoint's pool;
- **the answer writer**: ``litkit.server.answers.AnswerWriter``, the worker's frames to HTTP with
  back-pressure; ``EndpointRequest`` is one, so a request is one object on the hot path;
- **half-close**: ``litkit.server.halfclose``, telling a client that only half-closed from one that
  left.

The way through:

1. **Headers** (HEAD): the access checks (Host, Origin, 405, API key, then the API's own
   ``authorize`` hook, ``litkit.server.authorization``) and the limits, all before any body is read:
   401, 403, 405, 400 and 413 (by ``Content-Length``, ``litkit.server.headers``) and 431. A CORS
   preflight is answered here. A refusal waits for the body to be read and dropped (DISCARDING).
2. **Body** (BODY): gathered as it arrives, 413 past ``max_body_size`` (chunked uploads too).
3. **Queued** (QUEUED): a job in the endpoint's pool (503 when the queue is full or the server stops).
4. **Relayed** (RUNNING, then STREAMING or not, ANSWERED): once a worker starts the job, its
   response pipe is read whenever it is readable. A ``RESULT`` becomes the JSON body; ``CHUNK``
   frames go out as NDJSON lines or SSE events as soon as they arrive, the frames of one read in one
   write; ``ERROR`` becomes an error status, or a final error line once streaming began.
5. **Released** (RELEASED): once the socket took the whole answer: no timers, no job, out of the endpoint's in-flight set.

Ending early, all through ``cancel`` (to CANCELLED, or CANCELLED_STREAMING): the client leaves (an end of file before the
answer's first byte is first probed on HTTP/1.1, since a client that only half-closed still reads: see
``litkit.server.halfclose``); ``timeout`` passes before the first response byte, or ``queue_timeout`` before a worker takes
the request (504); the client reads nothing for ``client_timeout``; the server stops or ``Server.cancel`` is called (503).
The job is dropped if queued, or its pipe closed if running (``WorkerPool.cancel``; a written answer gives it back with
``WorkerPool.release``, in ``_complete``: only the pool closes a pipe). The record is this object's, changed only through
the endpoint's ``RequestTracker``; a cancel's reason is made where the cancel happens and passed once, to ``cancel``
(``docs/design.md``, "Who owns a request's bookkeeping").

Buffering is bounded: the pipe is read only while the socket has taken everything written so far,
so a client that stops reading stops its worker at a full pipe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, cast

from tornado import httputil
from tornado.http1connection import HTTP1Connection
from tornado.httputil import HTTPHeaders, RequestStartLine, ResponseStartLine

from ..pool.channels import PipeClosed, PipeReader
from ..pool.jobs import JobDropped, NoWorkers, QueueFull
from ..wire.forms import is_form
from ..wire.protocol import FrameParser
from .access import AccessDenied, check_access
from .admission import BODY_LIMIT_SLACK, DISCARD_PAST_LIMIT, Refusal, new_request_id, oversized_headers, submit, when_to_refuse
from .answers import METHODS, AnswerWriter
from .endpoints import EndpointState, ServingState
from .halfclose import Spare, SpareConnection, keep_spare
from .headers import BadHeader, accepts_gzip, content_length
from .phases import ANSWER_NOT_BEGUN, RELAYING, Phase, check_move

__all__ = ["EndpointRoute", "EndpointRequest"]

logger = logging.getLogger("litkit.server")


class EndpointRoute(httputil.HTTPServerConnectionDelegate):
    """The routing target of one endpoint's path: a fresh ``EndpointRequest`` for each request."""

    def __init__(self, endpoint: EndpointState, serving: ServingState) -> None:
        """Made on the server's loop, which every request of the endpoint then uses."""
        self.endpoint = endpoint
        self.serving = serving
        self.loop = asyncio.get_running_loop()

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> EndpointRequest:
        return EndpointRequest(self.endpoint, self.serving, cast(HTTP1Connection, request_conn), self.loop)


class EndpointRequest(AnswerWriter, httputil.HTTPMessageDelegate):
    """One request to an endpoint (see the module docstring for its way through). Its life is one
    ``Phase`` (``litkit.server.phases``), changed only by ``_move``; the writing of its answer is
    ``AnswerWriter``'s (``litkit.server.answers``)."""

    # One of these lives per request in flight: slots keep it small and its attributes quick.
    __slots__ = (
        "endpoint", "serving", "_connection", "request_id", "_method", "_uri", "_arrived", "_body",
        "_body_size", "_cors_origin", "_sse", "_job", "_record", "_pipe", "_parser", "_phase", "_loop", "_timeout_handle",
        "_own_id", "_queue_handle", "_form_type", "_version", "_spare", "_deferred", "_gzip",
    )

    def __init__(self, endpoint: EndpointState, serving: ServingState, connection: HTTP1Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.endpoint = endpoint
        self.serving = serving
        self._connection = connection
        self._phase = Phase.HEAD
        self.request_id = ""
        self._own_id = True  # request_id was made here (no usable X-Request-ID)
        self._method = ""
        self._uri = ""
        self._arrived = 0.0
        self._body: list[bytes] = []
        self._body_size = 0
        self._cors_origin = None
        self._sse = False
        self._job = None
        self._record = None
        self._pipe: PipeReader | None = None
        self._parser = FrameParser()
        self._loop = loop
        self._timeout_handle: asyncio.TimerHandle | None = None
        self._write_deadline = None
        self._queue_handle: asyncio.TimerHandle | None = None
        self._form_type: str | None = None  # the Content-Type of an HTML form body (litkit.wire.forms)
        self._version = ""  # the request's HTTP version
        self._spare: Spare | None = None  # a second handle on the connection (litkit.server.halfclose)
        self._gzip = False  # LitServer: a JSON answer of GZIP_MIN_SIZE bytes or more goes out gzipped
        self._deferred: tuple[int, str, object] | None = None  # the refusal sent once the body is read (DISCARDING)

    def _move(self, to: Phase) -> None:
        """Move this request to phase ``to``; raises RuntimeError on a move ``litkit.server.phases`` does not allow."""
        self._phase = check_move(self.request_id, self._phase, to)

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
        endpoint = self.endpoint
        self._sse = endpoint.always_sse or "text/event-stream" in headers.get("Accept", "")
        self._gzip = endpoint.litserve and accepts_gzip(headers.get("Accept-Encoding"))
        try:
            self._cors_origin = check_access(
                self.serving.access, headers, method, methods=METHODS, path=endpoint.path, authorize=endpoint.authorize, uri=self._uri,
            )
        except AccessDenied as denied:
            self._cors_origin = denied.cors_origin  # an allowed page may read the refusal
            self._refuse_after_body(headers, denied.status, denied.message, denied.detail)
            return None
        if method == "OPTIONS":
            self._answer_preflight()
            return None
        content_type = headers.get("Content-Type")
        if content_type is not None and is_form(content_type):
            self._form_type = content_type
        too_large = oversized_headers(method, self._uri, headers)
        if too_large is not None:
            self._refuse(431, too_large)
            return None
        limit = endpoint.max_body_size
        try:
            content_length(headers.get("Content-Length"), limit)
        except BadHeader as bad:
            if bad.status == 413:
                self._refuse_after_body(headers, 413, bad.message, discard=limit + DISCARD_PAST_LIMIT)
            else:
                self._refuse(bad.status, bad.message, self._closing_headers())
            return None
        # Bound chunked uploads too; this request refuses with 413 before the connection's limit trips.
        self._tornado_connection().set_max_body_size(limit + BODY_LIMIT_SLACK)
        self._move(Phase.BODY)
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self._phase is not Phase.BODY:
            return None  # refused (or answered already): the rest is read and dropped
        self._body_size += len(chunk)
        if self._body_size > self.endpoint.max_body_size:
            self._refuse_too_large(self._body_size)
            return None
        self._body.append(chunk)
        return None

    def finish(self) -> None:
        """The whole body is in: queue the job (or send the refusal that waited for it)."""
        phase = self._phase
        if (phase is not Phase.BODY and phase is not Phase.DISCARDING) or self._connection.stream.closed():
            return  # answered already, or the client left as its body arrived: nothing to run
        if self._deferred is not None:
            status, message, detail = self._deferred
            self._refuse(status, message, detail=detail)
            return
        # A re-run may have switched versions meanwhile: the version serving the path now takes it (ServerLoop.replace).
        endpoint = self.endpoint = self.endpoint.serving_now()
        if endpoint.stopping:
            self._refuse(503, "the server is stopping; it takes no new requests")
            return
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        try:
            self._record, job = submit(endpoint, self.request_id, self._uri, self._arrived, body, self._form_type, self._own_id)
        except (QueueFull, NoWorkers) as error:
            self._refuse(503, str(error))
            return
        self._job = job
        self._move(Phase.QUEUED)
        endpoint.active.add(self)
        connection = self._tornado_connection()
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

    def _tornado_connection(self) -> HTTP1Connection:
        """Tornado's connection: until the request is complete, no end of file has swapped in a spare."""
        return cast(HTTP1Connection, self._connection)

    def _refuse_after_body(self, headers: HTTPHeaders, status: int, message: str, detail: object = None, discard: int | None = None) -> None:
        """Refuse a request before its body is read, but answer once the body is read and dropped
        (``admission.when_to_refuse``: at once when there is no body, or one of more than
        ``discard`` bytes, default ``max_body_size``, which is not worth reading)."""
        limit = self.endpoint.max_body_size if discard is None else discard
        when = when_to_refuse(headers, limit)
        if when is Refusal.NOW_AND_CLOSE:
            self._refuse(status, message, self._closing_headers(), detail)
        elif when is Refusal.NOW:
            self._refuse(status, message, detail=detail)
        else:
            self._deferred = (status, message, detail)
            self._move(Phase.DISCARDING)
            self._tornado_connection().set_max_body_size(limit + BODY_LIMIT_SLACK)

    def _refuse_too_large(self, size: int) -> None:
        self._refuse(
            413,
            f"request body of {size} bytes exceeds max_body_size={self.endpoint.max_body_size} bytes; "
            "send less, or serve with a larger max_body_size",
        )

    @property
    def arrived(self) -> float:
        """When the request's head arrived (``time.monotonic()``)."""
        return self._arrived

    def on_connection_close(self) -> None:
        """The connection closed while the request was still arriving."""
        self._on_client_left()

    # -- half-close: an end of file that may not be a hang-up (litkit.server.halfclose) -------------

    def _on_end_of_file(self) -> None:
        """Tornado read end of file (or a reset) and closed its side while the answer was pending.
        The client may only have half-closed. Before the answer's first byte: probe on the spare,
        and answer there unless the probe shows it gone. A stream under way whose bytes were all
        sent, on a clean end of file (not a reset): go on on the spare unless its probe shows the
        client gone (issue 25, bug 8). Anything else is a hang-up."""
        if self._phase is Phase.RELEASED or isinstance(self._connection, SpareConnection):
            return  # settled already, by _client_is_there before this callback came
        spare = self._spare
        if spare is not None:
            connection: SpareConnection | None = None
            stream = self._connection.stream
            if self._phase in ANSWER_NOT_BEGUN:
                connection = spare.probe(self._on_spare_hung_up)
            elif self._phase is Phase.STREAMING and stream.error is None and not stream.writing():
                connection = spare.take_over(self._on_spare_hung_up)
            if connection is not None:
                self._connection = connection
                return
        self._on_client_left()

    def _client_is_there(self) -> bool:
        """Whether the client is still there to take (more of) the answer. A stream is closed a
        turn of the loop before its owner hears of it: Tornado's when it reads end of file or a
        reset, or when a write fails (``_on_end_of_file`` comes next turn), the spare's writer on a
        reset or a failed send (its hang-up callback comes next turn). A closed stream drops what
        is written and never reports a write pending, so anything that writes or reads the pipe
        on must settle that close first, here (the callback then finds nothing to do)."""
        if self._phase is not Phase.RELEASED and self._connection.stream.closed():
            if self._spare is not None and not isinstance(self._connection, SpareConnection):
                self._on_end_of_file()  # the client may only have half-closed: then the answer goes on on the spare
            else:
                self._on_client_left()
        return self._phase is not Phase.RELEASED

    def _on_spare_hung_up(self) -> None:
        """A reset or a failed write on the spare: the client that half-closed has gone."""
        if self._phase is not Phase.RELEASED:
            self._on_client_left()

    # -- relaying the worker's answer ---------------------------------------------------------------

    def _on_assigned(self, assigned: asyncio.Future[PipeReader]) -> None:
        self._clear_queue_timeout()
        if assigned.cancelled() or self._phase is not Phase.QUEUED or self._record is None:
            return  # cancelled (or answered) while it waited
        error = assigned.exception()
        if isinstance(error, NoWorkers):
            self._answer_error(503, str(error))
            return
        if error is not None:  # JobDropped: cancelled while queued, answered by whoever dropped it
            if not isinstance(error, JobDropped):
                logger.error("request %s could not start: %r", self.request_id, error)
                self._answer_error(500, f"the request could not start: {error}")
            return
        self._move(Phase.RUNNING)
        self.endpoint.tracker.start(self._record)
        self._pipe = assigned.result()
        # Nothing to read yet: the worker has only just been handed the request.
        self._pipe.watch(self._on_pipe_readable)

    def _on_pipe_readable(self) -> None:
        try:
            self._relay()
        except Exception as error:
            logger.exception("relaying request %s failed", self.request_id)
            if self._phase is not Phase.ANSWERED and self._phase is not Phase.RELEASED:
                self._answer_error(500, f"the server failed while relaying the answer: {error!r}")

    def _relay(self) -> None:
        """Read what the pipe holds and write it on, until the pipe is empty, the answer is
        complete, or the socket has not taken the last write (then wait for it)."""
        pipe = self._pipe
        if pipe is None or not self._client_is_there():
            return
        data = b""
        while self._phase in RELAYING:
            # Until the first chunk is out, take one frame at a time: a fast generator can fill the
            # pipe before the first read, and the first chunk must not wait for the rest to be parsed.
            frames = self._parser.feed(data, limit=None if self._phase is Phase.STREAMING else 1)
            data = b""
            if not frames:
                try:
                    more = pipe.read_available()
                except PipeClosed:
                    self._worker_died()  # end of file with no final frame (a cancel leaves RELAYING first)
                    return
                if more is None:
                    pipe.watch(self._on_pipe_readable)
                    return
                data = more
                continue
            self._write_frames(frames)
            if self._phase in RELAYING and not self._client_is_there():
                return  # the write failed: the client left (issue 25, bug 8: reading on ran the generator to its end)
            if self._phase in RELAYING and self._connection.stream.writing():
                pipe.unwatch()  # the client lags: read no more until it catches up
                self._wait_for_write()
                return

    # -- ending early: disconnect, timeout, stop --------------------------------------------------

    def _on_client_left(self) -> None:
        self.cancel(f"client left after {self.chunks_sent} chunks", "cancelled")
        self._release()

    def _on_timeout(self) -> None:
        self._timeout_handle = None
        if self._phase not in ANSWER_NOT_BEGUN:
            return  # streaming (the timeout is to the first byte), answered, or cancelled already
        message = f"no response within timeout={self.endpoint.timeout:g}s"
        self.cancel(message, "timed_out")
        self._end_with_error(504, message + "; serve with a larger timeout if this is expected")

    def _on_queue_timeout(self) -> None:
        self._queue_handle = None
        if self._phase is not Phase.QUEUED or self._job is None or self._job.assigned.done():
            return
        message = f"the request waited in the queue for more than queue_timeout={self.endpoint.queue_timeout:g}s"
        self.cancel(message, "timed_out")
        self._end_with_error(504, message + "; add workers, or serve with a larger queue_timeout")

    def cancel(self, reason: str, state: str = "cancelled") -> None:
        """End this request's work early: count it (``state``, with ``reason`` as its error, as given), and stop it
        (``WorkerPool.cancel``). Does nothing once the work is over (answered, cancelled, released) or before it began (no job)."""
        job = self._job
        phase = self._phase
        if job is None or self._record is None:
            return
        if phase is Phase.QUEUED or phase is Phase.RUNNING:
            self._move(Phase.CANCELLED)
        elif phase is Phase.STREAMING:
            self._move(Phase.CANCELLED_STREAMING)
        else:
            return
        self._clear_timeout()
        self._clear_queue_timeout()
        self.endpoint.tracker.finish(self._record, state, reason)
        self.endpoint.pool.cancel(job)

    def abort_for_stop(self) -> None:
        """The server is stopping: cancel the work and end the answer if the client is still there."""
        self._abort("cancelled: the server stopped", "the server stopped before this request finished")

    def abort(self, reason: str, message: str) -> None:
        """``Server.cancel``: end this request as ``_abort`` does; ``reason`` is recorded as given,
        followed for a streaming endpoint by how many chunks went out."""
        if self.endpoint.stream:
            reason = f"{reason} after {self.chunks_sent} chunks"
        self._abort(reason, message)

    def _abort(self, reason: str, message: str) -> None:
        """Cancel from the server's side (a stop, ``Server.cancel``): the work stops exactly as on a
        disconnect, and a client still there gets a 503 (``message``), or a final error line if
        streaming began."""
        if self._phase is Phase.ANSWERED:
            self._release()  # answered: only the socket's drain is left, and it is dropped
            return
        if self._phase not in RELAYING and self._phase is not Phase.QUEUED:
            return  # cancelled or released already
        self.cancel(reason, "cancelled")
        if self._connection.stream.closed():
            self._release()
            return
        self._end_with_error(503, message)

    def _release(self) -> None:
        """This request is over for the server: no timers, out of the endpoint's in-flight set (its job went back to the pool before)."""
        if self._phase is Phase.RELEASED:
            return
        self._move(Phase.RELEASED)
        self._clear_timeout()
        self._clear_queue_timeout()
        self._clear_write_deadline()
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
