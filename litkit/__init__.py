"""litkit: serve a Python model from a notebook.

``litkit.serve(api)`` returns at once with an HTTP endpoint up; the API runs in spawned worker
processes; streams stop when their client leaves. See the README for a tour.

The server side (``serve``, ``run``, ``Server``, ``Endpoint``), the clients (``Client``,
``AsyncClient``), ``specs`` and ``ray_app`` (Ray Serve, the optional extra ``litkit[ray]``) are
imported on first use, so that worker processes, which import this package, never load the HTTP
stack, and ``import litkit`` never imports Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .api import LitAPI
from .cancellation import cancelled
from .errors import HTTPError, LitkitError, PortInUseError, ServerStoppedError, WorkerStartError

if TYPE_CHECKING:
    from . import specs
    from .client import AsyncClient, Client
    from .ray import ray_app
    from .server import Endpoint, Server, run, serve

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
    "HTTPError",
    "WorkerStartError",
    "PortInUseError",
    "ServerStoppedError",
    "LitkitError",
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
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return module if name == _LAZY[name] else getattr(module, name)
    raise AttributeError(f"module 'litkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
