"""``Router``: the ingress of ``ray_app({"/a": A(), "/b": B()})``, one Ray Serve application with
several endpoints, each a deployment of its own (its own replicas, as each endpoint of
``litkit.serve`` has its own workers).

The router answers ``/health`` and unknown paths itself and forwards every other request to its
endpoint's deployment through a ``DeploymentHandle`` call with ``stream=True``
(``Replica.forwarded``): the status and headers first, then the body in parts, relayed as they
come. When the client leaves, Ray cancels the router's task; the router cancels the handle call,
and Ray cancels the endpoint's generator, which closes the user's generator as a direct hang-up
does. The extra hop costs one more actor call per request.
"""

from __future__ import annotations

from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..wire.encoding import encode_json
from .replica import path_in_app

__all__ = ["Router"]


class Router:
    """Routes each request by its path to the deployment of its endpoint.

    Args:
        routes: every path an endpoint answers (its POST path, a spec's GET paths) -> the
            endpoint's POST path.
        endpoints: the endpoint's POST path -> its deployment (Ray passes a ``DeploymentHandle``).
    """

    def __init__(self, routes: dict[str, str], endpoints: dict[str, Any]) -> None:
        self.routes = routes
        self.endpoints = endpoints

    async def __call__(self, request: Request) -> Response:
        path = path_in_app(request)
        request_id = request.headers.get("x-request-id", "")
        if request.method == "GET" and path == "/health":
            return _json(200, {"status": "ok"})
        endpoint = self.routes.get(path)
        if endpoint is None:
            known = ", ".join(sorted(self.endpoints))
            return _json(404, {"error": f"no endpoint at {path}; this application serves {known}", "request_id": request_id})
        body = await request.body() if request.method == "POST" else b""
        call = self.endpoints[endpoint].options(stream=True).forwarded.remote(
            request.method, path, request_id, request.headers.get("accept", ""), body
        )
        try:
            status, headers = await call.__anext__()
        except BaseException:
            call.cancel()
            raise
        return _Relayed(call, status_code=status, headers=dict(headers))


class _Relayed(StreamingResponse):
    """The endpoint's body parts as they come; the handle call is cancelled however this ends."""

    def __init__(self, call: Any, **options: Any) -> None:
        super().__init__(_parts(call), **options)
        self.call = call

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.call.cancel()  # a no-op once the endpoint's generator has ended


async def _parts(call: Any) -> AsyncIterator[bytes]:
    async for part in call:
        yield part


def _json(status: int, value: Any) -> Response:
    return Response(encode_json(value), status_code=status, media_type="application/json")
