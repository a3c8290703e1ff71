"""Where each request goes, and how long a client may take to send it.

``Router`` is the server's top delegate: a request to an endpoint's path goes to that endpoint's
relay (``litkit.server.relay``); any other path goes to the Tornado ``Application`` of the small handlers
(``litkit.server.handlers``). Both are looked up once per request, by the path alone.

``ClientDeadlines`` enforces ``client_timeout`` on clients that are slow or silent while sending:
the request line and headers (an idle keep-alive connection waits there too), then the body, each
within ``client_timeout``. One sweep every ``client_timeout / 10`` (at most 1 s) closes the
connections past their deadline, instead of Tornado's ``idle_connection_timeout`` and
``body_timeout``, which arm and cancel a timer and two futures on every request (``docs/benchmarks.md``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Awaitable, cast

import tornado.web
from tornado import httputil
from tornado.http1connection import HTTP1Connection

from .controls import Controls, control_route
from .endpoints import ServingState
from .handlers import make_application
from .litserve_routes import litserve_routes
from .page import page_routes
from .relay import EndpointRoute

__all__ = ["ClientDeadlines", "Router", "make_router"]

logger = logging.getLogger("litkit.server")

# The sweep's period as a share of client_timeout, and its longest period.
_SWEEPS_PER_TIMEOUT = 10
_MAX_SWEEP_S = 1.0


def make_router(serving: ServingState, controls: Controls | None = None) -> Router:
    """The server's delegate: each endpoint's path to its relay, every other path to the handlers
    (the dashboard's control paths among them, given ``controls``, and the page's)."""
    router = Router(ClientDeadlines(serving.client_timeout), controls)
    router.route_to(serving)
    return router


class ClientDeadlines:
    """The connections waiting for their client to send, and since when; closes those that waited
    longer than ``timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        # Weak keys: a connection whose client hung up while it waited for a request is dropped
        # with it (nothing tells the router), not kept with its buffers until the next sweep.
        self._since: weakref.WeakKeyDictionary[HTTP1Connection, float] = weakref.WeakKeyDictionary()
        self._sweeper: asyncio.TimerHandle | None = None

    def waiting(self, connection: HTTP1Connection) -> None:
        """``connection`` now waits for its client: for a request's headers, or for its body."""
        self._since[connection] = time.monotonic()

    def received(self, connection: HTTP1Connection) -> None:
        """The client sent what ``connection`` waited for."""
        self._since.pop(connection, None)

    def start(self) -> None:
        """Sweep on the running loop until ``stop()``."""
        self._schedule(asyncio.get_running_loop())

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        period = min(_MAX_SWEEP_S, self.timeout / _SWEEPS_PER_TIMEOUT)
        self._sweeper = loop.call_later(period, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        since = self._since
        oldest_allowed = time.monotonic() - self.timeout
        for connection, started in list(since.items()):
            stream = connection.stream
            if stream is None or stream.closed():
                since.pop(connection, None)  # the client hung up while the server waited: nothing to do
            elif started < oldest_allowed:
                since.pop(connection, None)
                logger.debug("closing a connection from %s: nothing complete sent within client_timeout=%gs", connection.context, self.timeout)
                connection.close()
        self._schedule(loop)


class Router(httputil.HTTPServerConnectionDelegate):
    """Routes each request by its path; see the module docstring."""

    def __init__(self, deadlines: ClientDeadlines, controls: Controls | None = None) -> None:
        """Routes nothing until ``route_to()``."""
        self.routes: dict[str, EndpointRoute] = {}
        self.application: tornado.web.Application | None = None
        self.deadlines = deadlines
        self._controls = controls

    def route_to(self, serving: ServingState) -> None:
        """Send every request whose headers arrive from now on to ``serving``'s endpoints and
        handlers, on every connection, open or new (a re-run: ``ServerLoop.replace``). A request
        already routed keeps the endpoint it was given, to its end."""
        more_routes = [control_route(serving, self._controls)] if self._controls is not None else []
        more_routes += page_routes(serving)  # /, /docs and /openapi.json
        more_routes += litserve_routes(serving)  # LitServer's health and info paths (none under serve())
        self.routes = {endpoint.path: EndpointRoute(endpoint, serving) for endpoint in serving.endpoints}
        self.application = make_application(serving, more_routes)
        self.deadlines.timeout = serving.client_timeout

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        connection = cast(HTTP1Connection, request_conn)
        self.deadlines.waiting(connection)
        return _Dispatch(self, server_conn, connection)


class _Dispatch(httputil.HTTPMessageDelegate):
    """One request until its headers name its path; then every call goes to the path's delegate."""

    __slots__ = ("_router", "_server_conn", "_connection", "_delegate")

    def __init__(self, router: Router, server_conn: object, connection: HTTP1Connection) -> None:
        self._router = router
        self._server_conn = server_conn
        self._connection = connection
        self._delegate: httputil.HTTPMessageDelegate | None = None

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine, headers: httputil.HTTPHeaders) -> Awaitable[None] | None:
        router = self._router
        router.deadlines.waiting(self._connection)  # from now on, for the body
        path = cast(httputil.RequestStartLine, start_line).path.partition("?")[0]
        route = router.routes.get(path)
        if route is not None:
            self._delegate = route.start_request(self._server_conn, self._connection)
        else:
            self._delegate = router.application.start_request(self._server_conn, self._connection)  # type: ignore[union-attr]
        return self._delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self._delegate.data_received(chunk)  # type: ignore[union-attr]

    def finish(self) -> None:
        self._router.deadlines.received(self._connection)
        self._delegate.finish()  # type: ignore[union-attr]

    def on_connection_close(self) -> None:
        self._router.deadlines.received(self._connection)
        if self._delegate is not None:
            self._delegate.on_connection_close()
