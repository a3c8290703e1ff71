"""``serve()``, ``run()`` and the ``Server`` they return: a Tornado server on its own thread and
event loop, in the calling process, in front of a pool of spawned workers.

``serve()`` returns once every worker is ready, so the next line of a notebook cell can call the
endpoint with any blocking client. The server thread owns every server object (pool, tracker,
handlers); other threads talk to it only through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import errno
import logging
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable, Mapping, TypeVar

import tornado.httpserver

from .api import LitAPI
from .client import Client, ChunkStream
from .endpoints import DEFAULT_API_PATH, ENDPOINT_OPTIONS, Endpoint, ServingState, check_int, check_seconds, plan_endpoints
from .errors import PortInUseError, ServerStoppedError
from .handlers import make_application
from .specs import Spec
from .links import public_url
from .logs import merge_logs
from .notebook import current_cell, in_jupyter_kernel
from .tracking import merge_recent, merge_stats

__all__ = ["Server", "serve", "run"]

logger = logging.getLogger("litkit.server")

T = TypeVar("T")

DEFAULT_MAX_BODY_SIZE = 16 * 1024 * 1024
# How long stop() waits for open connections to close after their requests were ended.
_CLOSE_CONNECTIONS_S = 2.0
_WATCH_INTERVAL_S = 0.5


class Server:
    """A running litkit server. Made by ``litkit.serve()``; use it, then ``stop()`` it.

    In Jupyter, ``display(server)`` (or ``serve(...)`` as a cell's last expression) shows the live
    dashboard, ``server.widget``; elsewhere the server shows as one line of text.

    Attributes:
        url: the base URL, e.g. ``"http://127.0.0.1:8000"``.
        api_path: the path of the (first) endpoint, e.g. ``"/predict"``.
        paths: the path of every endpoint, in the order given to ``serve()``.
        state: ``"starting"``, ``"serving"``, ``"stopped"``, or ``"replaced"`` (a later ``serve()``
            on the same port stopped it).
    """

    def __init__(self, state: ServingState, sockets: list[socket.socket], url: str, port: int) -> None:
        self._serving = state
        self._sockets = sockets
        self.url = url
        self.port = port
        self.state = "starting"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._thread_main, name=f"litkit-server-{port}", daemon=True)
        self._finished = threading.Event()  # set when the server thread is done
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._dashboard: Any = None  # litkit.dashboard.Dashboard, made on first use of .widget
        self._cell: tuple[str, str] | None = None  # (cell id, execution id) of the notebook cell that served it

    # -- the public surface -----------------------------------------------------------------------

    @property
    def api_path(self) -> str:
        return self._serving.first.path

    @property
    def paths(self) -> list[str]:
        return [endpoint.path for endpoint in self._serving.endpoints]

    @property
    def stream_mode(self) -> bool:
        """True when the (first) endpoint streams (``predict`` is a generator function)."""
        return self._serving.first.stream

    def endpoint_info(self, path: str | None = None) -> dict[str, Any]:
        """The configuration of the endpoint at ``path`` (default: the first): api, workers, stream, spec..."""
        return self._serving.find(path).info()

    @property
    def public_url(self) -> str:
        """The base URL a browser should use: ``url``, or its proxied form where ``LITKIT_PROXY_URL``
        or JupyterHub's ``JUPYTERHUB_SERVICE_PREFIX`` is set (see ``litkit.links.public_url``)."""
        return public_url(self.url, self.port)

    def status(self) -> dict[str, Any]:
        """A snapshot: url, state, workers, request counts, the 100 most recent requests (newest
        first), throughput and latency over the last minute (``stats``), the workers' last output
        lines (``logs``, oldest first), all over every endpoint, and ``endpoints``: per endpoint."""
        return self._call_in_loop(self._snapshot)

    def cancel(self, request_id: str, reason: str = "cancelled by Server.cancel()") -> bool:
        """Cancel a queued or running request exactly as if its client had disconnected.

        A queued request is dropped and never runs; a running one has its pipe closed, so the
        worker closes its generators (their ``finally`` blocks run) at the next chunk. The request
        is counted ``cancelled`` with ``reason`` as its error, and a client still connected gets a
        503 (or, mid-stream, a final error line) and its stream ends. Thread-safe.

        Returns:
            True if a queued or running request had that id; False if none (it may have finished).
        """
        if not isinstance(request_id, str):
            raise TypeError(f"request_id must be a str (an id from status()['recent']), got {type(request_id).__name__}")
        return self._call_in_loop(lambda: self._cancel_in_loop(request_id, str(reason)))

    @property
    def widget(self) -> Any:
        """The live dashboard of this server, an ipywidgets widget (made on first use).

        It refreshes from ``status()`` at most 5 times a second on its own thread, until the
        server stops; then it keeps the final figures. It works without a frontend too.
        """
        with self._lock:
            if self._dashboard is None:
                from .dashboard import Dashboard  # ipywidgets only when a dashboard is asked for

                endpoints = self._serving.endpoints
                self._dashboard = Dashboard(
                    self.status,
                    title=", ".join(dict.fromkeys(endpoint.api_name for endpoint in endpoints)),
                    # One endpoint: its URL. Several: the server's, with their paths after it.
                    endpoint=self.public_url + (self.api_path if len(endpoints) == 1 else " " + " ".join(self.paths)),
                    link=self.public_url + "/info",
                    cancel=self.cancel,
                    stop=self.stop,
                )
            return self._dashboard

    def predict(self, payload: Any, timeout: float | None = 60.0, path: str | None = None) -> Any:
        """POST ``payload`` to the endpoint at ``path`` (default: the first) and return the decoded JSON answer.

        Raises:
            litkit.HTTPError: the server answered with an error status.
            ValueError: the server has no endpoint at ``path``.
        """
        return self.client.predict(payload, path=self._serving.find(path).path, timeout=timeout)

    def stream(self, payload: Any, sse: bool = False, timeout: float | None = 60.0, path: str | None = None) -> ChunkStream:
        """POST ``payload`` to a streaming endpoint and iterate over the chunks as they arrive.

        Closing the stream (``close()``, or leaving its ``with`` block) disconnects, which stops the
        work on the server.

        Raises:
            litkit.HTTPError: the server refused the request.
            ValueError: the server has no endpoint at ``path``.
        """
        return self.client.stream(payload, path=self._serving.find(path).path, sse=sse, timeout=timeout)

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.url)
        return self._client

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving: close the listener, end requests in flight, stop the workers, join the thread.

        Idempotent. Afterwards no thread, worker process, pipe or listening socket of this server
        remains and the port can be bound again.
        """
        self._shutdown("stopped", timeout)

    def wait(self) -> None:
        """Block until the server stops (Ctrl+C raises KeyboardInterrupt here, as usual)."""
        # Not Thread.join(): on Python < 3.12 a KeyboardInterrupt inside join() marks the thread as
        # finished while it still runs (CPython gh-90882), and stop() would then skip the shutdown.
        while not self._finished.wait(0.5):
            pass

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        endpoints = self._serving.endpoints
        if len(endpoints) > 1:
            return f"<litkit.Server {self.state} {self.public_url} ({len(endpoints)} endpoints: {', '.join(self.paths)})>"
        workers = endpoints[0].workers
        kind = "streaming" if self.stream_mode else "JSON"
        return f"<litkit.Server {self.state} {self.public_url}{self.api_path} ({workers} worker{'s' * (workers != 1)}, {kind})>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """In a Jupyter kernel: the dashboard widget (with this text repr as fallback)."""
        if not in_jupyter_kernel():
            return {"text/plain": repr(self)}
        bundle = dict(self.widget._repr_mimebundle_())
        bundle["text/plain"] = repr(self)
        return bundle

    # -- start and stop ---------------------------------------------------------------------------

    def _start(self, start_timeout: float) -> None:
        self._thread.start()
        try:
            # The pool enforces start_timeout; the margin covers spawning and the thread starting.
            self._started.result(timeout=start_timeout + 10.0)
        except BaseException:
            self._shutdown("stopped", 10.0)
            raise
        self.state = "serving"

    def _shutdown(self, final_state: str, timeout: float) -> None:
        with self._lock:
            if self.state not in ("stopped", "replaced"):
                self.state = final_state
            _unregister(self)
            loop, stop_requested = self._loop, self._stop_requested
            if loop is not None and stop_requested is not None and self._thread.is_alive():
                try:
                    loop.call_soon_threadsafe(stop_requested.set)
                except RuntimeError:
                    pass  # the loop closed in the meantime
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.error("the litkit server thread did not stop within %.1fs", timeout)
        dashboard = self._dashboard
        if dashboard is not None:
            dashboard.finish()

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except BaseException as error:  # noqa: BLE001 - report to serve() instead of dying silently
            if not self._started.done():
                self._started.set_exception(error)
            logger.exception("the litkit server thread failed")
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            asyncio.set_event_loop(None)
            self._finished.set()

    async def _main(self) -> None:
        self._stop_requested = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        if self.state in ("stopped", "replaced"):  # stop() came before the loop existed
            self._stop_requested.set()
        http_server = tornado.httpserver.HTTPServer(
            make_application(self._serving),
            # The handler enforces max_body_size with a 413; this only bounds what Tornado buffers.
            max_body_size=self._serving.max_body_size + 1024 * 1024,
            idle_connection_timeout=300,
        )
        http_server.add_sockets(self._sockets)
        try:
            try:
                await self._wait_for_start_or_stop(self._serving.start())
            except BaseException as error:
                self._started.set_exception(error)
                return
            self._started.set_result(None)
            await self._stop_requested.wait()
        finally:
            await self._close(http_server)

    async def _wait_for_start_or_stop(self, start: Any) -> None:
        start_task = asyncio.ensure_future(start)
        stop_task = asyncio.ensure_future(self._stop_requested.wait())  # type: ignore[union-attr]
        await asyncio.wait((start_task, stop_task), return_when=asyncio.FIRST_COMPLETED)
        stop_task.cancel()
        if not start_task.done():
            start_task.cancel()
            raise ServerStoppedError("the server was stopped while its workers were starting")
        start_task.result()

    async def _close(self, http_server: tornado.httpserver.HTTPServer) -> None:
        serving = self._serving
        in_flight = serving.begin_stop()
        http_server.stop()  # closes the listening sockets
        for handler in in_flight:
            handler.abort_for_stop()
        await serving.stop_workers()
        try:
            await asyncio.wait_for(http_server.close_all_connections(), _CLOSE_CONNECTIONS_S)
        except asyncio.TimeoutError:
            logger.warning("some client connections did not close within %.1fs", _CLOSE_CONNECTIONS_S)
        for endpoint in serving.endpoints:
            endpoint.tracker.stop_clock()  # the final figures stay as they are now

    # -- talking to the server thread -------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        endpoints = self._serving.endpoints
        per_endpoint = [endpoint.snapshot() for endpoint in endpoints]
        trackers = [endpoint.tracker for endpoint in endpoints]
        counts: dict[str, int] = {}
        for endpoint in per_endpoint:
            for state, count in endpoint["counts"].items():
                counts[state] = counts.get(state, 0) + count
        # Top-level keys: every endpoint together. A worker names its endpoint when there are several.
        workers = [{**worker, "endpoint": e["path"]} if len(endpoints) > 1 else worker for e in per_endpoint for worker in e["workers"]]
        return {
            "url": self.url,
            "state": self.state,
            "workers": workers,
            "counts": counts,
            "recent": merge_recent(trackers),
            "stats": merge_stats(trackers),
            "logs": merge_logs([endpoint.pool.log for endpoint in endpoints]),
            "api": endpoints[0].api_name,
            "endpoints": per_endpoint,
        }

    def _cancel_in_loop(self, request_id: str, reason: str) -> bool:
        found = False
        for endpoint in self._serving.endpoints:
            recorded = reason.replace("{", "{{").replace("}", "}}")  # the handler fills in {chunks}
            if endpoint.stream:
                recorded += " after {chunks} chunks"
            for handler in [handler for handler in endpoint.active if handler.request_id == request_id]:
                handler.abort(recorded, f"request {request_id} was {reason}")
                found = True
        return found

    def _call_in_loop(self, function: Callable[[], T], timeout: float = 5.0) -> T:
        loop = self._loop
        if loop is None or not self._thread.is_alive() or threading.current_thread() is self._thread:
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
                if self._finished.is_set():  # the loop ended before it ran the call
                    return function()
                if time.monotonic() > deadline:
                    raise


# -- serve() and run() ----------------------------------------------------------------------------

_registry_lock = threading.Lock()
_servers_by_port: dict[int, Server] = {}
_atexit_registered = False


def serve(
    api: LitAPI | Mapping[str, LitAPI | Endpoint],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    stream: bool | None = None,
    api_path: str = DEFAULT_API_PATH,
    timeout: float | None = None,
    max_queue: int = 1024,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    start_timeout: float = 60.0,
    max_batch_size: int = 1,
    batch_timeout: float = 0.0,
    accelerator: str = "auto",
    devices: int | list[int] | None = None,
    workers_per_device: int | None = None,
    max_concurrency: int = 1,
    spec: Spec | None = None,
) -> Server:
    """Serve ``api`` over HTTP from this process and return once every worker is ready.

    The server runs on its own thread; the workers are fresh Python processes that receive the API
    object through cloudpickle, so a class defined in a notebook cell or a script's ``__main__``
    works. Calling ``serve()`` again with a port this process already serves stops the old server
    first; so does re-running, in Jupyter, the cell that started a server (whatever its port).

    Args:
        api: a ``litkit.LitAPI`` instance; or a dict of several endpoints on one server,
            ``{"/embed": Embedder(), "/chat": litkit.Endpoint(Chat(), workers=2)}``, each with its own
            workers. The options below, except ``host``, ``port``, ``api_path`` and
            ``start_timeout``, are the defaults of every endpoint; ``litkit.Endpoint(api, **options)``
            overrides them for one.
        host: the address to listen on; the default listens on loopback only.
        port: the TCP port; 0 picks a free one (read it from ``server.url``).
        workers: how many worker processes run the API, each one request at a time.
        stream: None to stream exactly when ``predict`` is a generator function; True or False to
            insist (a mismatch is an error).
        api_path: the path of the predict endpoint.
        timeout: seconds from a request's arrival to its first response byte; past it the client
            gets 504 and the work is cancelled. None for no limit.
        max_queue: requests that may wait for a free worker; past it the server answers 503.
        max_body_size: the largest request body in bytes; larger ones get 413.
        start_timeout: seconds each worker may take to load the API and run ``setup``.
        max_batch_size: above 1, a free worker takes up to this many queued requests at once and
            runs them through ``batch``, one ``predict`` call, and ``unbatch`` (docs/batching.md).
        batch_timeout: seconds a partial batch may wait for more requests, counted from its
            oldest request's arrival in the queue; 0 sends whatever is queued at once.
        accelerator: ``"auto"`` (CUDA when a GPU is visible, else the CPU), ``"cpu"`` or ``"cuda"``
            (docs/devices.md).
        devices: with CUDA, which GPUs: None for all visible, a count for the first N, or a list
            of indices among the visible GPUs.
        workers_per_device: workers on each device; None uses ``workers``.
        max_concurrency: requests each worker runs at once; above 1 needs ``async def predict``
            (or an async generator), which then runs on an event loop in the worker (docs/async.md).
        spec: a protocol to speak instead of litkit's own, e.g. ``litkit.specs.OpenAIChat()``:
            the API is then served at the spec's paths (``/v1/chat/completions``, ``/v1/models``).

    Raises:
        TypeError: ``api`` is not a LitAPI, or cloudpickle cannot serialize it.
        ValueError: an argument is out of range, ``stream`` contradicts ``predict``, or the devices
            asked for are not there (e.g. ``accelerator="cuda"`` on a machine without a GPU).
        PortInUseError: another process holds the port.
        WorkerStartError: a worker failed to start; no process is left behind.
    """
    # Every per-endpoint option, by name, as given here: the defaults of each endpoint.
    arguments = dict(locals())
    defaults = {name: arguments[name] for name in ENDPOINT_OPTIONS}
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be an address such as '127.0.0.1', got {host!r}")
    check_int("port", port, 0, 65535)
    check_seconds("start_timeout", start_timeout)
    serving = ServingState(plan_endpoints(api, api_path, defaults, start_timeout))
    cell = current_cell()
    _stop_servers_of_earlier_runs(cell)
    if port:
        _stop_server_on_port(port)
    sockets, port = _bind(host, port)
    server = Server(serving, sockets, _url(host, port), port)
    server._cell = cell
    _register(server)
    server._start(start_timeout)
    return server


def run(api: LitAPI | Mapping[str, LitAPI | Endpoint], **options: Any) -> None:
    """Serve ``api`` and block until Ctrl+C (or SIGTERM); then stop cleanly. Takes ``serve()``'s options."""
    server = serve(api, **options)
    block_until_interrupted(server, banner(server, "Ctrl+C to stop"))


def banner(server: Server, note: str | None = None) -> str:
    """One ``litkit: serving API at URL (kind)`` line per endpoint."""
    lines = []
    for path in server.paths:
        info = server.endpoint_info(path)
        kind = "OpenAI chat" if info["spec"] == "openai-chat" else "streaming" if info["stream"] else "JSON"
        lines.append(f"litkit: serving {info['api']} at {server.url}{path} ({note or kind})")
    return "\n".join(lines)


def block_until_interrupted(server: Server, announcement: str, watch: Callable[[Server], Server] | None = None) -> None:
    """Print ``announcement``, wait for Ctrl+C or SIGTERM, then stop ``server``.

    ``watch``, if given, is called about twice a second with the current server and returns the
    server to keep (e.g. a new one after a reload); the one current at the end is stopped.
    """
    restore = _raise_keyboard_interrupt_on_sigterm()
    _echo_worker_output(server)
    try:
        print(announcement, flush=True)
        if watch is None:
            server.wait()
        while watch is not None:
            time.sleep(_WATCH_INTERVAL_S)
            current, server = server, watch(server)
            if server is not current:
                _echo_worker_output(server)
    except KeyboardInterrupt:
        pass
    finally:
        restore()
        server.stop()
        print("litkit: stopped", flush=True)


def _echo_worker_output(server: Server) -> None:
    """A script or the litkit command owns its terminal: what the workers print shows there, as is."""
    for endpoint in server._serving.endpoints:
        endpoint.pool.log.listeners.append(_print_line)


def _print_line(worker_id: int, stream: str, line: str) -> None:
    if stream in ("stdout", "stderr"):
        print(line, file=sys.stdout if stream == "stdout" else sys.stderr, flush=True)


def _raise_keyboard_interrupt_on_sigterm() -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def _bind(host: str, port: int) -> tuple[list[socket.socket], int]:
    """Listening sockets for every address ``host`` resolves to, all on one port.

    Our own loop rather than ``tornado.netutil.bind_sockets``, which leaves the failed socket
    unclosed when the port is taken.
    """
    try:
        addresses = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ValueError(f"host {host!r} is not an address this machine can listen on ({error})") from error
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # every address on the port the first one got
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.setblocking(False)
            sock.listen(128)
    except OSError as error:
        for sock in sockets:
            sock.close()
        if error.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port) from error
        if error.errno == errno.EACCES:
            raise PermissionError(f"not allowed to listen on port {port}; ports below 1024 need privileges, use a higher port or port=0") from error
        raise
    return sockets, sockets[0].getsockname()[1]


def _url(host: str, port: int) -> str:
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _stop_server_on_port(port: int) -> None:
    with _registry_lock:
        old = _servers_by_port.get(port)
    if old is not None:
        logger.info("port %d is served by an earlier litkit server in this process; stopping it first", port)
        old._shutdown("replaced", 10.0)


def _stop_servers_of_earlier_runs(cell: tuple[str, str] | None) -> None:
    """Re-running a notebook cell replaces the servers its earlier runs started (not those of this run)."""
    if cell is None:
        return
    with _registry_lock:
        earlier = [s for s in _servers_by_port.values() if s._cell is not None and s._cell[0] == cell[0] and s._cell[1] != cell[1]]
    for old in earlier:
        logger.info("this cell started %s in an earlier run; stopping it first", old.url)
        old._shutdown("replaced", 10.0)


def _register(server: Server) -> None:
    global _atexit_registered
    with _registry_lock:
        _servers_by_port[server.port] = server
        if not _atexit_registered:
            atexit.register(_stop_all)
            _atexit_registered = True


def _unregister(server: Server) -> None:
    with _registry_lock:
        if _servers_by_port.get(server.port) is server:
            del _servers_by_port[server.port]


def _stop_all() -> None:
    with _registry_lock:
        servers = list(_servers_by_port.values())
    for server in servers:
        server.stop()
