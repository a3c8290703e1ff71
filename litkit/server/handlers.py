"""The small Tornado handlers: health, info, metrics, a spec's GET paths, and 404s, with JSON errors.

Calls to the endpoints themselves do not come here: ``litkit.server.routing`` sends them to
``litkit.server.relay``. The HTTP layer knows the pools and trackers, nothing about widgets.

Every request first passes the access checks (``litkit.server.access``): Host, Origin, API key.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import tornado.web

from .access import KEY_CHALLENGE, PREFLIGHT_HEADERS, PREFLIGHT_REFUSED, AccessDenied, check_access, cors_headers
from .admission import new_request_id, oversized_headers
from .answers import error_body
from .endpoints import EndpointState, ServingState
from .metrics import render_metrics

__all__ = ["make_application"]

access_logger = logging.getLogger("litkit.server.access")


def make_application(serving: ServingState, more_routes: list[Any] = []) -> tornado.web.Application:  # noqa: B006 - never mutated
    """Every path but the endpoints' own: health, info, metrics, a spec's GET paths, ``more_routes``
    (the dashboard's control paths, ``litkit.server.controls``; LitServer's paths,
    ``litkit.server.litserve_routes``), and 404."""
    options = {"state": serving, "serving": serving}
    routes: list[Any] = [
        *more_routes,  # first: LitServer's /health and /info replace litkit's (litkit.server.litserve_routes)
        (r"/health", HealthHandler, options),
        (r"/info", InfoHandler, options),
        (r"/metrics", MetricsHandler, options),
    ]
    for endpoint in serving.endpoints:
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

    ``prepare`` runs the access checks before anything else (``litkit.server.access.check_access``,
    which the endpoints' relay calls too): Host, then Origin, then, unless the handler is ``open`` or
    this is a CORS preflight, the API key.
    """

    state: Any  # the ServingState, or for a spec's GET paths its EndpointState
    open = False  # True: no API key needed (health)

    def initialize(self, state: Any, serving: ServingState) -> None:
        self.state = state
        self.serving = serving

    def prepare(self) -> None:
        request = self.request
        try:
            self._cors_origin = check_access(self.serving.access, request.headers, request.method or "", key_needed=not self.open)
        except AccessDenied as denied:
            self._cors_origin = denied.cors_origin  # an allowed page may read the refusal
            raise self.error(denied.status, denied.message) from None
        self._set_cors_headers()
        if request.method == "OPTIONS":
            return  # a preflight carries no credentials; options() answers it
        too_large = oversized_headers(request.method or "", request.uri or "", request.headers)
        if too_large is not None:
            raise self.error(431, too_large)

    def _set_cors_headers(self) -> None:
        origin = getattr(self, "_cors_origin", None)
        if origin is not None:
            for name, value in cors_headers(origin):
                self.set_header(name, value)

    def options(self, *args: Any) -> None:
        """A CORS preflight from an allowed origin (prepare refused the others)."""
        if getattr(self, "_cors_origin", None) is None:
            raise self.error(400, PREFLIGHT_REFUSED)
        for name, value in PREFLIGHT_HEADERS:
            self.set_header(name, value)
        self.set_status(204)
        self.finish()

    @property
    def request_id(self) -> str:
        request_id = getattr(self, "_request_id", None)
        if request_id is None:
            request_id = self._request_id = new_request_id(self.request.headers.get("X-Request-ID"))
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
            self.set_header("WWW-Authenticate", KEY_CHALLENGE)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(self.error_body(status_code, message)))

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return error_body(self.state, status, message, self.request_id)

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

    async def get(self) -> None:
        ok, reason = self.state.health()
        if ok:
            ok, reason = await self.state.api_health()  # each API's own health() hook, if it has one
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

    def initialize(self, state: Any, serving: ServingState, name: str = "") -> None:
        super().initialize(state, serving)
        self.name = name

    def get(self) -> None:
        endpoint = self.state
        if endpoint.spec is None:
            raise RuntimeError(f"{endpoint.path} has no spec to answer GET {self.request.path}")
        self.write_json(200, endpoint.spec.extra_response(self.name, endpoint.model, endpoint.created))
