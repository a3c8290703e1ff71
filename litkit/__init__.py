"""litkit: serve a Python model from a notebook.

``litkit.serve(api)`` returns at once with an HTTP endpoint up; the API runs in spawned worker
processes; streams stop when their client leaves. See the README for a tour.

The server side (``serve``, ``run``, ``Server``, ``Endpoint``), the clients (``Client``,
``AsyncClient``), ``specs``, LitServe's names (``LitServer``; ``litkit.compat``) and ``ray_app``
(Ray Serve, the optional extra ``litkit[ray]``) are imported on first use, so that worker
processes, which import this package, never load the HTTP stack, and ``import litkit`` never
imports Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .api import FINISHED, LitAPI
from .cancellation import cancelled
from .errors import HTTPError, LitkitError, PortInUseError, ServerStoppedError, WorkerStartError

if TYPE_CHECKING:
    from . import specs
    from .client import AsyncClient, Client
    from .compat import Callback, LitServer, Logger
    from .ray import ray_app
    from .server import Endpoint, Server, run, serve
    from .specs import OpenAIEmbeddingSpec, OpenAISpec

__version__ = "0.1.0"

__all__ = [
    "LitAPI",
    "serve",
    "run",
    "Server",
    "Client",
    "AsyncClient",
    "Endpoint",
    "specs",
    "ray_app",
    "cancelled",
    "FINISHED",
    "HTTPError",
    "WorkerStartError",
    "PortInUseError",
    "ServerStoppedError",
    "LitkitError",
    "LitServer",
    "Logger",
    "Callback",
    "OpenAISpec",
    "OpenAIEmbeddingSpec",
    "__version__",
]

# name -> the module that defines it, imported on first use (workers never load the server side).
_LAZY = {
    "serve": "server",
    "run": "server",
    "Server": "server",
    "Endpoint": "server",
    "Client": "client",
    "AsyncClient": "client",
    "specs": "specs",
    "ray_app": "ray",  # Ray Serve (the optional extra litkit[ray]); imports ray only when called
    # LitServe's names (litkit.compat), so that `import litkit as ls` runs LitServe code.
    "LitServer": "compat",
    "Logger": "compat",
    "Callback": "compat",
    "OpenAISpec": "specs",
    "OpenAIEmbeddingSpec": "specs",
    "test_examples": "test_examples",  # LitServe's example APIs
    "schema": "schema",
}


_DEBUG_A_HOOK = (
    "debug a hook by calling it in this process (api.setup('cpu'); api.predict(x)), or print() in it: "
    "the worker's output is in server.status()['logs']"
)

# LitServe names that litkit does not offer, and what to use instead (docs/migrating-from-litserve.md).
_LITSERVE_ONLY = {
    "Request": "litkit's hooks receive the parsed body; authorize(self, request) gets the headers",
    "Response": "return a JSON-encodable value (or a pydantic model) from encode_response",
    "set_trace": _DEBUG_A_HOOK,
    "set_trace_if_debug": _DEBUG_A_HOOK,
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return module if name == _LAZY[name] else getattr(module, name)
    if name in _LITSERVE_ONLY:
        raise AttributeError(f"litkit has no {name} (LitServe's ls.{name}): {_LITSERVE_ONLY[name]}; see docs/migrating-from-litserve.md")
    raise AttributeError(f"module 'litkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
