"""What crosses the host boundary, between the caller's interpreter and the one that runs a server
(``litkit.server.host``): the recipe the server is made from, and the named kinds of calls and events.

Both sides import this module: the caller's (``litkit.server.host``, ``litkit.server.host_caller``)
and the server's (``litkit.server.host_server``, in a sub-interpreter or a process of its own), so it
imports only what the server's side needs anyway.

The frames (``HOST_INIT``, ``HOST_CALL``, ``HOST_REPLY``, ``HOST_EVENT``) are ``litkit.wire.protocol``'s.
A ``HOST_CALL`` carries ``(call id, Call, arguments)``; its ``HOST_REPLY`` ``(call id, ok, value or
error)``; a ``HOST_EVENT`` ``(Event, value)``. Both ends are one machine and one litkit, so the
payloads are stdlib pickles (``REPLACE``'s recipe cloudpickled, as ``HOST_INIT``).
"""

from __future__ import annotations

import enum
import pickle
from typing import Any, Callable

from .endpoints import EndpointPlan, ServingState

__all__ = ["Call", "Event", "ServerRecipe", "caller_only", "lengthen_slice", "portable"]


class Call(enum.Enum):
    """The caller's calls to the server's side; each gets one ``HOST_REPLY``."""

    STATUS = "status"  # (state,) -> the status snapshot, with that state
    CANCEL = "cancel"  # (request id, reason) -> whether a request of that id was in flight
    STOP = "stop"  # (drain seconds,) -> None, once the stop has begun
    LISTEN_OUTPUT = "listen_output"  # () -> None; the workers' lines follow as OUTPUT events
    REPLACE = "replace"  # (ServerRecipe,) -> None once the new version serves, or the error that stopped its start


class Event(enum.Enum):
    """What the server's side says unasked, in a ``HOST_EVENT``."""

    STARTED = "started"  # None, or the error that stopped the start
    LOG = "log"  # a log record's fields, for the caller's logger of the same name
    OUTPUT = "output"  # (worker id, stream, text): a worker's line, for the output listeners
    FINAL = "final"  # the status as the server's loop ended
    STOP_REQUESTED = "stop_requested"  # the dashboard's Stop, over HTTP: the caller's Server stops
    LOG_ENTRY = "log_entry"  # (key, value): a hook's self.log(), for the caller's on_log


class ServerRecipe:
    """What a server's loop is made from: plain data, able to cross to another interpreter."""

    def __init__(
        self,
        plans: list[EndpointPlan],
        access: Any,
        client_timeout: float,
        slice_ms: float,
        url: str,
        control_secret: str,
        on_log: Callable[[str, Any], None] | None = None,
        root_text: str | None = None,
        openapi: bool = True,
    ) -> None:
        self.plans = plans
        self.root_text = root_text  # GET /'s answer to a client not asking for HTML (litkit.server.page)
        self.openapi = openapi  # False: no /openapi.json, and so no page
        self.control_secret = control_secret
        self.access = access
        self.client_timeout = client_timeout
        self.slice_ms = slice_ms
        self.url = url
        self.on_log = on_log  # the caller's: it stays on the caller's side
        self.forwards_log = on_log is not None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["on_log"] = None
        return state

    def caller_only(self) -> str | None:
        """Why this server must run in the caller's interpreter (None: it need not); see ``caller_only()``."""
        return caller_only(self.plans)

    def serving(self, on_log: Callable[[str, Any], None] | None, previous: ServingState | None = None) -> ServingState:
        """The server's state made from this recipe; ``previous``: the version it replaces (a re-run)."""
        serving = ServingState(
            self.plans, access=self.access, client_timeout=self.client_timeout, slice_ms=self.slice_ms,
            root_text=self.root_text, openapi=self.openapi, previous=previous,
        )
        for endpoint in serving.endpoints:
            endpoint.pool.log_entries.on_log = on_log
        return serving


def caller_only(plans: list[EndpointPlan]) -> str | None:
    """Why a server of these endpoints must run in the caller's interpreter (None: it need not): an
    API hook that the server calls itself (LitServe's ``authorize`` and ``health``) runs on the API
    object, which only the caller's interpreter holds."""
    for plan in plans:
        if plan.authorize is not None:
            return f"{plan.api_name}.authorize() runs in the serving process, on the API object"
        if plan.health_hook is not None:
            return f"{plan.api_name}.health() runs in the serving process, on the API object"
    return None


def lengthen_slice(slice_ms: float) -> None:
    """Lengthen the calling thread's time slice to ``slice_ms`` (``litkit.worker.timeslice``); not
    passed on to the workers the server spawns."""
    from ..worker.timeslice import lengthen_slice as lengthen  # ctypes: loaded on the server thread only

    lengthen(slice_ms)


def portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(error).__name__}: {error}")
