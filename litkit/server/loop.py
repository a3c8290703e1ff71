"""One server's side on its own event loop: Tornado's ``HTTPServer``, the endpoints' pools, the
requests in flight (``ServerLoop``).

``run()`` blocks the thread that calls it until the server stops; that thread owns every object
here. Other threads reach it only through ``call()`` (``loop.call_soon_threadsafe``) and
``stop()``. The same code runs on a thread of the caller's interpreter, inside a sub-interpreter
of its own, or in a process of its own (``litkit.server.host``): it imports neither the registry nor anything of the
notebook, and it never sees the user's API object, only its pickled bytes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
from typing import Any, Callable, TypeVar

import tornado.httpserver

from ..errors import ServerStoppedError
from ..pool.logs import OutputListener, merge_logs
from ..pool.tracking import merge_recent, merge_stats
from .controls import Controls
from .endpoints import ServingState
from .routing import Router, make_router

__all__ = ["MAX_HEADER_BYTES", "RETIRE_AFTER_S", "ServerLoop"]

logger = logging.getLogger("litkit.server")

T = TypeVar("T")

# Tornado closes a connection whose request line and headers pass this before reading them whole;
# litkit answers 431 past admission.HEADER_LIMIT, which is smaller.
MAX_HEADER_BYTES = 64 * 1024
# How long stopping waits for open connections to close after their requests were ended.
_CLOSE_CONNECTIONS_S = 2.0
# How long a replaced version's requests (running or queued when the new one took over) may go
# on before they are ended and its workers stopped: long enough for a long generation to finish.
RETIRE_AFTER_S = 300.0


class ServerLoop:
    """The HTTP server and the pools of one ``Server``, on an event loop of their own.

    ``started`` resolves once every worker is ready (or to the start's error); ``finished`` is set
    once ``run()`` has returned.
    """

    def __init__(self, serving: ServingState, sockets: list[socket.socket], url: str, control_secret: str, request_stop: Callable[[], None]) -> None:
        """``control_secret`` opens the dashboard's control paths; their Stop calls ``request_stop``,
        which must start stopping the ``Server`` and return at once."""
        self.serving = serving
        self.url = url
        self._controls = Controls(control_secret, cancel=self.cancel, stop=request_stop)
        self._sockets = sockets
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stop_requested: asyncio.Event | None = None
        self._stop_asked = False  # stop() before the loop existed
        self._drain_s = 0.0
        self._router: Router | None = None
        self._connection_params: Any = None  # Tornado's HTTP1ConnectionParameters, once listening
        self._starting: ServingState | None = None  # a new version whose workers start (replace())
        self._retiring: list[ServingState] = []  # replaced versions finishing what they admitted
        self._tasks: set[asyncio.Task[None]] = set()  # replacements and retirements under way
        self._output_listeners: list[OutputListener] = []
        self._closing = False  # past the drain: a retiring version ends what it has left
        self._lock = threading.Lock()
        self.started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.finished = threading.Event()

    # -- from any thread --------------------------------------------------------------------------

    def stop(self, drain: float = 0.0) -> None:
        """Ask the loop to stop: refuse new requests, give those in flight ``drain`` seconds, end
        the rest, stop the workers. Returns at once; ``finished`` is set when it is done."""
        with self._lock:
            self._stop_asked = True
            self._drain_s = drain
            loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None and not self.finished.is_set():
            try:
                loop.call_soon_threadsafe(stop_requested.set)
            except RuntimeError:
                pass  # the loop closed in the meantime

    def replace(self, make: Callable[[ServingState], ServingState]) -> concurrent.futures.Future[None]:
        """Serve a new version without closing the listener (a re-run of ``serve()``): ``make``
        builds it, on the loop, from the version serving now (whose history it carries on). Its
        workers start while the current ones go on answering; once every one is ready, requests
        whose headers arrive from then on go to it, on every connection; the requests the old
        version admitted (running or queued) finish there, for up to ``RETIRE_AFTER_S``, and then
        its workers stop. Returns at once.

        Returns:
            a future resolved once the new version takes requests, or to the error that stopped
            its start (``WorkerStartError``; ``ServerStoppedError`` when the server stops first),
            in which case the current version goes on serving as if nothing happened.
        """
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def begin() -> None:
            task = asyncio.ensure_future(self._replace(make))
            self._tasks.add(task)

            def settle(task: asyncio.Task[None]) -> None:
                self._tasks.discard(task)
                error = None if task.cancelled() else task.exception()
                if task.cancelled() or isinstance(error, asyncio.CancelledError):
                    error = ServerStoppedError("the server was stopped while the new version's workers were starting")
                done.set_exception(error) if error is not None else done.set_result(None)

            task.add_done_callback(settle)

        loop = self._loop
        try:
            if loop is None or self.finished.is_set():
                raise RuntimeError("the loop is not running")
            loop.call_soon_threadsafe(begin)
        except RuntimeError:
            done.set_exception(ServerStoppedError("the server has stopped; serve again to start a new one"))
        return done

    def call(self, function: Callable[[], T], timeout: float = 5.0) -> T:
        """Run ``function`` on the loop's thread and return its result (raising what it raises).
        Before the loop runs, after it has ended, or on the loop's own thread, it runs here."""
        loop = self._loop
        if loop is None or self.finished.is_set() or threading.get_ident() == self._loop_thread:
            return function()  # nothing runs concurrently (or we are that thread)
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                result.set_result(function())
            except BaseException as error:  # noqa: BLE001 - hand it to the caller
                result.set_exception(error)

        try:
            loop.call_soon_threadsafe(call)
        except RuntimeError:  # the loop closed between the check and the call
            return function()
        deadline = time.monotonic() + timeout
        while True:
            try:
                return result.result(0.05)
            except concurrent.futures.TimeoutError:
                if self.finished.is_set():  # the loop ended before it ran the call
                    return function()
                if time.monotonic() > deadline:
                    raise

    # -- on the loop's thread (or once it has ended) ----------------------------------------------

    def snapshot(self, state: str) -> dict[str, Any]:
        """What ``Server.status()`` returns; ``state`` is the ``Server``'s.

        The top-level ``workers`` include those of a version still starting or still finishing
        its requests after a re-run (each worker names its ``version``); ``versions`` says what
        each version does, newest first."""
        endpoints = self.serving.endpoints
        per_endpoint = [endpoint.snapshot() for endpoint in endpoints]
        # Newest first: a version starting, the one serving, the replaced ones still finishing.
        versions = [(self._starting, "starting")] if self._starting is not None else []
        versions += [(self.serving, "serving"), *((old, "draining") for old in reversed(self._retiring))]
        every = [endpoint for version, _ in versions for endpoint in version.endpoints]
        # An endpoint carries its tracker and log on from version to version: each counts once.
        trackers = list({id(endpoint.tracker): endpoint.tracker for endpoint in every}.values())
        logs = list({id(endpoint.pool.log): endpoint.pool.log for endpoint in every}.values())
        counts: dict[str, int] = {}
        for tracker in trackers:
            for name, count in tracker.counts().items():
                counts[name] = counts.get(name, 0) + count
        # Top-level keys: every endpoint together. A worker names its endpoint when there are several.
        several = len({endpoint.path for endpoint in every}) > 1
        workers = [
            {**worker, "version": version.version, **({"endpoint": endpoint.path} if several else {})}
            for version, _ in versions
            for endpoint in version.endpoints
            for worker in endpoint.pool.snapshot()
        ]
        return {
            "url": self.url,
            "state": state,
            "health": dict(zip(("ok", "reason"), self.serving.health())),
            "version": self.serving.version,
            "versions": [{"version": version.version, "state": what, "in_flight": version.in_flight} for version, what in versions],
            "workers": workers,
            "counts": counts,
            "recent": merge_recent(trackers),
            "stats": merge_stats(trackers),
            "logs": merge_logs(logs),
            "api": endpoints[0].api_name,
            "endpoints": per_endpoint,
        }

    def cancel(self, request_id: str, reason: str) -> bool:
        """End the request ``request_id`` from the server's side; False if none has that id.

        Clients may send the same ``X-Request-ID`` on several requests: one cancel ends one of
        them, the oldest (issue 25: it ended all of them); the next cancel ends the next.
        """
        matching = [
            (request.arrived, request)
            for version in (self.serving, *self._retiring)
            for endpoint in version.endpoints
            for request in endpoint.active
            if request.request_id == request_id
        ]
        if not matching:
            return False
        _arrived, request = min(matching, key=lambda found: found[0])
        request.abort(reason, f"request {request_id} was {reason}")  # a stream's records how many chunks went out
        return True

    def add_output_listener(self, listener: OutputListener) -> None:
        """Call ``listener(worker_id, stream, line)`` for each line the workers print from now on
        (those of later versions too); once, however often it is added."""
        if listener not in self._output_listeners:
            self._output_listeners.append(listener)
        self._listen_to(self.serving)

    def remove_output_listener(self, listener: OutputListener) -> None:
        if listener in self._output_listeners:
            self._output_listeners.remove(listener)
        for version in (self.serving, *self._retiring, *([self._starting] if self._starting else [])):
            for endpoint in version.endpoints:
                if listener in endpoint.pool.log.listeners:
                    endpoint.pool.log.listeners.remove(listener)

    def _listen_to(self, serving: ServingState) -> None:
        for endpoint in serving.endpoints:
            listeners = endpoint.pool.log.listeners
            listeners.extend(listener for listener in self._output_listeners if listener not in listeners)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, prepare: Callable[[], None] | None = None) -> None:
        """Serve until ``stop()``; a failure to start resolves ``started`` with it. ``prepare``, if
        given, runs on the loop before anything else."""
        self._loop_thread = threading.get_ident()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main(prepare))
        except BaseException as error:  # report to serve() instead of dying silently
            if not self.started.done():
                self.started.set_exception(error)
            logger.exception("the litkit server thread failed")
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)
            for sock in self._sockets:  # closed by the HTTP server already, unless it never got them
                sock.close()
            self.finished.set()

    async def _main(self, prepare: Callable[[], None] | None) -> None:
        if prepare is not None:
            prepare()
        with self._lock:
            self._stop_requested = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            if self._stop_asked:  # stop() came before the loop existed
                self._stop_requested.set()
        router = self._router = make_router(self.serving, self._controls)
        http_server = tornado.httpserver.HTTPServer(
            router,
            # The relay enforces max_body_size with a 413; this only bounds what Tornado buffers.
            max_body_size=self.serving.max_body_size + 1024 * 1024,
            max_header_size=MAX_HEADER_BYTES,
            # No idle_connection_timeout or body_timeout: the router's ClientDeadlines apply
            # client_timeout to the request line and headers (an idle keep-alive connection
            # waits there too) and to the body.
        )
        # HTTPServer turns a missing idle_connection_timeout into a one-hour header timeout,
        # which wraps every request's header read in gen.with_timeout (a timer and futures).
        http_server.conn_params.header_timeout = None
        self._connection_params = http_server.conn_params
        http_server.add_sockets(self._sockets)
        router.deadlines.start()
        try:
            try:
                await self._wait_for_start_or_stop(self.serving.start())
            except BaseException as error:  # noqa: BLE001 - the start failure is handed to serve(), which raises it
                self.started.set_exception(error)
                return
            self.started.set_result(None)
            await self._stop_requested.wait()
            await self._drain()
        finally:
            router.deadlines.stop()
            await self._close(http_server)

    async def _wait_for_start_or_stop(self, start: Any) -> None:
        start_task = asyncio.ensure_future(start)
        stop_task = asyncio.ensure_future(self._stop_requested.wait())  # type: ignore[union-attr]  # set before the loop serves
        await asyncio.wait((start_task, stop_task), return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        if not start_task.done():
            start_task.cancel()
            raise ServerStoppedError("the server was stopped while its workers were starting")
        start_task.result()

    async def _replace(self, make: Callable[[ServingState], ServingState]) -> None:
        """``replace()`` on the loop: start the new version beside the current one, then switch."""
        stopping = self._stop_requested is None or self._stop_requested.is_set()
        if stopping or self._router is None or not self.started.done() or self.started.exception() is not None:
            raise ServerStoppedError("the server is not serving (stopping, or never started); serve again to start a new one")
        if self._starting is not None:
            raise RuntimeError("another version of this server is starting; wait until its serve() returns")
        serving = self._starting = make(self.serving)
        self._listen_to(serving)
        try:
            await self._wait_for_start_or_stop(serving.start())
        except BaseException:
            await serving.stop_workers()
            raise
        finally:
            self._starting = None
        old, self.serving = self.serving, serving
        params = self._connection_params  # shared by every connection, open or new
        params.max_body_size = max(params.max_body_size or 0, serving.max_body_size + 1024 * 1024)
        serving.take_requests(previous=old)
        self._router.route_to(serving)
        self._retiring.append(old)
        task = asyncio.ensure_future(self._retire(old))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        logger.info(
            "version %d of the server at %s serves; version %d finishes its %d requests in flight", serving.version, self.url, old.version, old.in_flight
        )

    async def _retire(self, old: ServingState) -> None:
        """Let a replaced version finish the requests it admitted, for up to ``RETIRE_AFTER_S``;
        then end the rest and stop its workers."""
        deadline = time.monotonic() + RETIRE_AFTER_S
        while old.in_flight and time.monotonic() < deadline and not self._closing:
            await asyncio.sleep(0.01)
        left = old.begin_stop()
        if left and time.monotonic() >= deadline:
            logger.warning(
                "version %d of the server at %s still had %d requests in flight %.0fs after it was replaced; ending them",
                old.version, self.url, len(left), RETIRE_AFTER_S,
            )
        for request in left:
            request.abort_for_stop()
        await old.stop_workers()
        self._retiring.remove(old)

    async def _drain(self) -> None:
        """Refuse new requests and give those in flight until the drain deadline to finish."""
        serving = self.serving
        serving.begin_stop()
        deadline = time.monotonic() + self._drain_s
        while (serving.in_flight or any(old.in_flight for old in self._retiring)) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def _close(self, http_server: tornado.httpserver.HTTPServer) -> None:
        serving = self.serving
        self._closing = True
        in_flight = serving.begin_stop()
        http_server.stop()  # closes the listening sockets
        for request in in_flight:
            request.abort_for_stop()
        # A version still starting, or replaced and still finishing, sees the stop and stops its
        # own workers (``_replace``, ``_retire``).
        await asyncio.gather(serving.stop_workers(), *self._tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(http_server.close_all_connections(), _CLOSE_CONNECTIONS_S)
        except asyncio.TimeoutError:
            logger.warning("some client connections did not close within %.1fs", _CLOSE_CONNECTIONS_S)
        for endpoint in serving.endpoints:
            endpoint.tracker.stop_clock()  # the final figures stay as they are now
