"""The handler of ``<base_url>litkit/<port>/<path>``: one browser request relayed to a litkit server
of this Jupyter server's kernels, its answer streamed back as it comes.

* **Who may call**: Jupyter's own rules. The handler is a ``JupyterHandler``, so jupyter_server
  applies its identity provider (token, cookie; under JupyterHub, the hub's OAuth), its XSRF check
  on every method but GET and HEAD, and its Origin and Host checks, exactly as to its own API;
  ``@tornado.web.authenticated`` refuses anyone it did not recognise, and the authorizer is asked
  for ``write`` (POST) or ``read`` (GET) on ``kernels`` (calling a model served by a kernel is
  using that kernel). Where to: ``owners.KernelPorts``.
* **What goes on**: the method, the path after the port (percent-encoded again; a control
  character in it, e.g. ``%0d%0a``, is a 400 before anything connects), the query without
  Jupyter's ``token`` and ``_xsrf`` (they would be recorded in ``status()["recent"]``), and the
  body, unless it is larger than the endpoint's ``max_body_size`` (read from the server's
  registration): then the route answers 413 itself, as the server would. The request's
  headers except the hop-by-hop ones and Jupyter's credentials (``Cookie``, ``Authorization``,
  ``X-XSRFToken``), and except ``Origin``, ``Referer`` and ``Host`` (the page's origin was checked
  here; upstream, the request comes from loopback). A litkit API key goes as ``X-API-Key``.
* **Streaming**: the upstream connection is a raw Tornado ``IOStream`` read by
  ``HTTP1Connection``; each piece of the body is written and flushed to the browser as it arrives
  (no buffering; ``X-Accel-Buffering: no`` asks nginx in front of a hub not to buffer either),
  and the upstream read waits for the browser's write (back-pressure).
* **Hang-up**: when the browser's connection closes, ``on_connection_close`` closes the upstream
  socket at once; litkit sees its client leave and cancels the request (a generator's ``finally``
  runs), as on a direct hang-up.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from typing import Any

import tornado.gen
import tornado.httputil
import tornado.iostream
import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import JupyterHandler
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.httputil import HTTPHeaders, HTTPMessageDelegate, RequestStartLine, ResponseStartLine
from tornado.tcpclient import TCPClient

from .owners import KernelPorts, RouteRefused

__all__ = ["RelayHandler"]

logger = logging.getLogger("litkit.jupyter")

CONNECT_TIMEOUT_S = 10.0
MAX_RESPONSE_HEADERS = 64 * 1024
# Never relayed, either way: hop-by-hop headers (RFC 9110 7.6.1) and lengths the two connections set themselves.
HOP_BY_HOP = frozenset(
    name.lower()
    for name in (
        "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding",
        "Upgrade", "Content-Length",
    )
)
# Never relayed upstream: Jupyter's credentials and what describes the browser's page.
NOT_UPSTREAM = HOP_BY_HOP | frozenset(("host", "cookie", "authorization", "x-xsrftoken", "x-csrftoken", "origin", "referer"))


class RelayHandler(JupyterHandler):
    """Relays ``<base_url>litkit/<port>/<path>`` to ``http://127.0.0.1:<port>/<path>``."""

    auth_resource = "kernels"

    def initialize(self, ports: KernelPorts) -> None:
        self.ports = ports
        self._upstream: tornado.iostream.IOStream | None = None
        self._browser_left = False
        self._answer_started = False  # the upstream status and headers are set here
        self._answer_ended = False

    @tornado.web.authenticated
    @authorized
    async def get(self, port: str, path: str | None) -> None:
        await self._relay(port, path)

    @tornado.web.authenticated
    @authorized
    async def post(self, port: str, path: str | None) -> None:
        await self._relay(port, path)

    @tornado.web.authenticated
    @authorized
    async def head(self, port: str, path: str | None) -> None:
        await self._relay(port, path)

    def on_connection_close(self) -> None:
        """The browser left: hang up on the litkit server, which then cancels the request."""
        self._browser_left = True
        if self._upstream is not None:
            self._upstream.close()

    async def _relay(self, port_text: str, path: str | None) -> None:
        # Everything about the request is checked before anything connects upstream.
        target = _upstream_target(path, self.request.query)
        # A port of 6 digits or more is no port; int() of thousands of digits raises (500 before).
        port = int(port_text) if len(port_text) <= 5 else 0
        try:
            if not 0 < port < 65536:
                shown = f"{port_text[:20]}{'...' if len(port_text) > 20 else ''}"
                raise RouteRefused(400, f"{shown} is not a TCP port (1 to 65535); the route is <base_url>litkit/<port>/<path>")
            host, registration = await self.ports.target(port)
        except RouteRefused as refused:
            raise tornado.web.HTTPError(refused.status, refused.message, reason=None) from None
        limit = registration.max_body_size(path or "/")
        if limit is not None and len(self.request.body) > limit:
            # The server would answer 413 from Content-Length and close while the body is still
            # being written, which the route saw as a broken connection: 502 or 413 by timing.
            raise tornado.web.HTTPError(
                413, f"request body is {len(self.request.body)} bytes, more than max_body_size={limit} bytes; send less, or serve with a larger max_body_size"
            )
        try:
            stream = await TCPClient().connect(host, port, timeout=CONNECT_TIMEOUT_S)
        except (OSError, tornado.iostream.StreamClosedError, tornado.gen.TimeoutError) as error:
            raise tornado.web.HTTPError(502, f"could not connect to the litkit server on port {port}: {error}") from None
        if self._browser_left:
            stream.close()
            return
        self._upstream = stream
        try:
            stream.set_nodelay(True)
            connection = HTTP1Connection(
                stream, True, HTTP1ConnectionParameters(no_keep_alive=True, max_header_size=MAX_RESPONSE_HEADERS, decompress=False)
            )
            connection.write_headers(RequestStartLine(self.request.method, target, "HTTP/1.1"), self._upstream_headers(host, port))
            if self.request.body:
                connection.write(self.request.body)
            connection.finish()
            await connection.read_response(_Downstream(self))
        except (tornado.iostream.StreamClosedError, tornado.httputil.HTTPInputError) as error:
            if self._browser_left or self._answer_ended:
                return
            if not self._answer_started:
                raise tornado.web.HTTPError(502, f"the litkit server on port {port} closed the connection: {error}") from None
            # The answer was under way (its kernel died, say): close the browser's connection
            # without the last chunk, so the browser sees the stream cut short, not complete.
            self.log.warning("litkit: the litkit server on port %d ended its answer half-way (%s)", port, error)
            self._browser_left = True
            if isinstance(self.request.connection, HTTP1Connection):  # always, under Tornado's HTTP/1.1 server
                self.request.connection.close()
        finally:
            stream.close()

    def _upstream_headers(self, host: str, port: int) -> HTTPHeaders:
        headers = HTTPHeaders()
        for name, value in self.request.headers.get_all():
            if name.lower() not in NOT_UPSTREAM:
                headers.add(name, value)
        headers["Host"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        headers["Connection"] = "close"
        if self.request.body or self.request.method == "POST":
            headers["Content-Length"] = str(len(self.request.body))
        return headers

    def _start_answer(self, start_line: ResponseStartLine, headers: HTTPHeaders) -> None:
        self._answer_started = True
        self.set_status(start_line.code, start_line.reason)
        self.clear_header("Content-Type")
        seen = set()
        for name, value in headers.get_all():
            lower = name.lower()
            if lower in HOP_BY_HOP and not (lower == "content-length" and "Transfer-Encoding" not in headers):
                continue
            # The first of a name replaces Jupyter's own (Server, Date); repeats are kept (Vary).
            (self.add_header if lower in seen else self.set_header)(name, value)
            seen.add(lower)
        self.set_header("X-Accel-Buffering", "no")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Refusals as JSON, like litkit's own errors: ``{"error": message}``."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(error, "log_message", None) or tornado.httputil.responses.get(status_code, "error")
        self.set_header("Content-Type", "application/json")
        self.finish({"error": message})


class _Downstream(HTTPMessageDelegate):
    """The upstream answer, written to the browser piece by piece."""

    def __init__(self, handler: RelayHandler) -> None:
        self.handler = handler

    def headers_received(self, start_line: RequestStartLine | ResponseStartLine, headers: HTTPHeaders) -> None:
        assert isinstance(start_line, ResponseStartLine)  # a client connection reads responses only
        self.handler._start_answer(start_line, headers)

    async def data_received(self, chunk: bytes) -> None:
        if self.handler._browser_left:
            return
        self.handler.write(chunk)
        try:
            await self.handler.flush()
        except tornado.iostream.StreamClosedError:
            self.handler.on_connection_close()

    def finish(self) -> None:
        if not self.handler._browser_left and not self.handler._answer_ended:
            self.handler._answer_ended = True
            self.handler.finish()

    def on_connection_close(self) -> None:
        pass  # read_response raises; _relay answers 502 if nothing went out yet


# Query parameters that are Jupyter's credentials, never litkit's: not sent upstream.
JUPYTER_QUERY_CREDENTIALS = frozenset(("token", "_xsrf"))
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What stays as it is in the path of a request line (RFC 3986 pchar and "/"); the rest is percent-encoded.
_PATH_SAFE = "/!$&'()*+,;=:@-._~"


def _upstream_target(path: str | None, query: str) -> str:
    """The request target for the litkit server: the path after the port (Tornado decoded it),
    percent-encoded again, and the query without Jupyter's credentials.

    Raises:
        tornado.web.HTTPError: 400, the path holds a control character (``%0d%0a``, say).
    """
    path = path or "/"
    if _CONTROL.search(path):
        raise tornado.web.HTTPError(400, f"the path {path!r} holds a control character (CR, LF, NUL...); litkit's paths have none, send the endpoint's path")
    kept = [part for part in query.split("&") if part and urllib.parse.unquote_plus(part.partition("=")[0]) not in JUPYTER_QUERY_CREDENTIALS]
    return urllib.parse.quote(path, safe=_PATH_SAFE) + ("?" + "&".join(kept) if kept else "")

