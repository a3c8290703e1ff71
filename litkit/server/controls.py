"""The dashboard's buttons over HTTP: ``POST /litkit/control/cancel`` and ``/litkit/control/stop``,
authorized by a per-server control secret, so that a click reaches the server from the browser
while a cell runs (through the kernel's shell channel it waited for the cell to end).

The secret (256 bits, made with the server) is handed only to the dashboard's widget model, whose
front end sends it as ``X-Litkit-Control``. Nothing else opens these paths: not the API key, not
a Jupyter login. The secret is never a cookie, so no page can make a browser send it: the paths
answer CORS preflights from any origin (the notebook's page is another origin than
``127.0.0.1:<port>``) and still refuse every request without the secret. The loopback ``Host``
check applies as to every path.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from typing import Any, Callable

from .access import AccessDenied
from .handlers import JSONHandler

__all__ = ["CANCEL_REASON", "CONTROL_PATH", "SECRET_HEADER", "ControlHandler", "Controls", "control_route", "new_secret"]

CONTROL_PATH = "/litkit/control"
SECRET_HEADER = "X-Litkit-Control"
CANCEL_REASON = "cancelled from the dashboard"  # as litkit.notebook.dashboard.CANCEL_REASON
_PREFLIGHT = (
    ("Access-Control-Allow-Methods", "POST, OPTIONS"),
    ("Access-Control-Allow-Headers", f"{SECRET_HEADER}, Content-Type"),
    ("Access-Control-Max-Age", "600"),
)


def new_secret() -> str:
    """A fresh control secret: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


class Controls:
    """What the control paths may do to one server, and the secret that lets them.

    Args:
        secret: the control secret (``new_secret()``, made with the ``Server``, which hands it to
            the widget; it travels to the server's loop with the endpoints' plans).
        cancel: ``cancel(request_id, reason)`` on the server's loop; True if the request was live.
        stop: starts stopping the server and returns at once.
    """

    def __init__(self, secret: str, cancel: Callable[[str, str], bool], stop: Callable[[], None]) -> None:
        self.secret = secret
        self._secret_bytes = secret.encode()
        self.cancel = cancel
        self.stop = stop

    def authorizes(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(offered.encode(), self._secret_bytes)


class ControlHandler(JSONHandler):
    """``POST /litkit/control/(cancel|stop)``; see the module docstring."""

    def initialize(self, state: Any, serving: Any, controls: Controls) -> None:  # type: ignore[override]
        super().initialize(state, serving)
        self.controls = controls

    def prepare(self) -> None:
        request = self.request
        try:
            self.serving.access.check_host(request.headers.get("Host", ""))
        except AccessDenied as denied:
            raise self.error(denied.status, denied.message) from None
        self._cors_origin = request.headers.get("Origin")
        self._set_cors_headers()
        if request.method == "OPTIONS":
            return
        if not self.controls.authorizes(request.headers.get(SECRET_HEADER)):
            raise self.error(
                403,
                f"{request.path} takes only the dashboard's control secret, in {SECRET_HEADER}; the API key does "
                "not open it. To cancel or stop from code, call server.cancel(request_id) or server.stop()",
            )

    def options(self, *args: Any) -> None:
        if self._cors_origin is None:
            raise self.error(400, "OPTIONS is only answered as a CORS preflight (with an Origin header)")
        for name, value in _PREFLIGHT:
            self.set_header(name, value)
        self.set_status(204)
        self.finish()

    def post(self, action: str) -> None:
        if action == "stop":
            self.controls.stop()
            self.write_json(202, {"stopping": True})
            return
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError:
            body = None
        request_id = body.get("request_id") if isinstance(body, dict) else None
        if not isinstance(request_id, str) or not request_id:
            raise self.error(422, 'send {"request_id": "<an id from the dashboard>"} as JSON')
        self.write_json(200, {"cancelled": self.controls.cancel(request_id, CANCEL_REASON), "request_id": request_id})


def control_route(serving: Any, controls: Controls) -> tuple[str, type[ControlHandler], dict[str, Any]]:
    """The Tornado route of the control paths for ``make_application``."""
    return (re.escape(CONTROL_PATH) + r"/(cancel|stop)", ControlHandler, {"state": serving, "serving": serving, "controls": controls})
