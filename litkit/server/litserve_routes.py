"""LitServe's own paths, which a ``litkit.LitServer`` serves in LitServe's shapes (its APIs carry
them: ``litkit.contract.conventions``); ``litkit.serve()`` keeps litkit's ``/health`` and ``/info``.
(``GET /``'s ``litserve running`` is the page's: ``litkit.server.page``.)

* ``GET <healthcheck_path>`` (default ``/health``): ``ok``, or ``not ready`` with 503 while a worker
  is not ready or an API's ``health()`` says no. Open without the key, as litkit's ``/health``.
* ``GET <info_path>`` (default ``/info``): ``{"model": model_metadata, "server": {...}}``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from .endpoints import ServingState
from .handlers import JSONHandler

__all__ = ["litserve_routes"]

logger = logging.getLogger("litkit.server")


def litserve_routes(serving: ServingState) -> list[Any]:
    """The routes of LitServe's paths (none unless the server's APIs follow LitServe)."""
    face = serving.litserve_face
    if face is None:
        return []
    options = {"state": serving, "serving": serving}
    return [
        (_exact(face["healthcheck_path"]), HealthHandler, options),
        (_exact(face["info_path"]), InfoHandler, options),
    ]


def _exact(path: str) -> str:
    return re.escape(path)


class _TextHandler(JSONHandler):
    state: ServingState

    def write_text(self, status: int, text: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text)


class HealthHandler(_TextHandler):
    open = True

    async def get(self) -> None:
        ok, reason = self.state.health()
        if ok:
            ok, reason = await self.state.api_health()
        if ok:
            self.write_text(200, "ok")
        else:
            logger.info("health check: not ready: %s", reason)  # LitServe's answer says no more
            self.write_text(503, "not ready")


class InfoHandler(JSONHandler):
    state: ServingState

    def get(self) -> None:
        self.write_json(200, self.state.litserve_face["info"])  # type: ignore[index]
