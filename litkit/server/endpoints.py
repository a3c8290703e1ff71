"""Endpoints on a running server: each path's pool of workers, request tracker and requests in flight.

Each endpoint has its own ``WorkerPool`` (its own worker processes) and its own ``RequestTracker``;
``ServingState`` is the set of them that the HTTP layer and ``Server`` share. What each endpoint
serves, and with which options, was settled before the server started (``litkit.server.planning``:
``Endpoint`` and ``EndpointPlan``, re-exported here).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Protocol, TypeVar

from .. import __version__
from ..contract.hooks import awaited
from ..options import EndpointOptions
from ..pool.logs import WorkerLog
from ..pool.pool import WorkerPool
from ..pool.tracking import RequestTracker
from ..specs import Spec
from .access import AccessPolicy
from .authorization import Authorizer
from .planning import DEFAULT_API_PATH, ENDPOINT_OPTIONS, RESERVED_PATHS, Endpoint, EndpointPlan

__all__ = [
    "ActiveRequest", "DEFAULT_API_PATH", "ENDPOINT_OPTIONS", "Endpoint", "EndpointPlan", "EndpointState", "RESERVED_PATHS", "ServingState", "find_endpoint",
]

logger = logging.getLogger("litkit.server")


class ActiveRequest(Protocol):
    """A request in flight at an endpoint, as ``Server`` sees it (``litkit.server.relay.EndpointRequest``)."""

    request_id: str

    @property
    def arrived(self) -> float:
        """When it arrived (``time.monotonic()``)."""

    def abort(self, reason: str, message: str) -> None:
        """Cancel it from the server's side: ``reason`` is recorded, ``message`` answers a client still there."""

    def abort_for_stop(self) -> None:
        """End it because the server stops."""


class EndpointState:
    """One endpoint on the server: its configuration, pool, tracker, and requests in flight."""

    def __init__(self, plan: EndpointPlan, previous: EndpointState | None = None) -> None:
        """``previous``: the endpoint at this path in the version this one replaces, whose request
        history (tracker) and output lines (log) this one carries on."""
        options = plan.options
        self.plan = plan
        self.options: EndpointOptions = options
        # A spec's protocol decides the framing (OpenAI chat streams are always SSE).
        self.always_sse = plan.spec is not None and plan.spec.always_sse
        self.tracker: RequestTracker = previous.tracker if previous is not None else RequestTracker()
        log = previous.pool.log if previous is not None else WorkerLog(plan.path)
        self.pool: WorkerPool = WorkerPool(
            plan.api_bytes,
            stream=plan.stream,
            max_queue=options.max_queue,
            start_timeout=plan.start_timeout,
            max_batch_size=options.max_batch_size,
            batch_timeout=options.batch_timeout,
            placements=plan.placements,
            max_concurrency=options.max_concurrency,
            async_api=plan.async_api,
            spec=plan.spec_bytes,
            log=log,
            cancel_grace=options.cancel_grace,
            code_origins=plan.code_origins,
        )
        self.stopping = False
        self.active: set[ActiveRequest] = set()
        self.successor: EndpointState | None = None  # the endpoint at this path in the version that replaced this one

    def serving_now(self) -> EndpointState:
        """This endpoint, or the one that serves its path now that a re-run replaced it."""
        endpoint = self
        while endpoint.successor is not None:
            endpoint = endpoint.successor
        return endpoint

    # What the plan settled, read by the HTTP layer (one source: the plan and its options).

    @property
    def path(self) -> str:
        return self.plan.path

    @property
    def api_name(self) -> str:
        return self.plan.api_name

    @property
    def workers(self) -> int:
        return self.plan.workers

    @property
    def stream(self) -> bool:
        return self.plan.stream

    @property
    def spec(self) -> Spec | None:
        return self.plan.spec

    @property
    def model(self) -> str:
        return self.plan.model

    @property
    def created(self) -> int:
        return self.plan.created

    @property
    def litserve(self) -> bool:
        return self.plan.litserve

    @property
    def authorize(self) -> Authorizer | None:
        return self.plan.authorize

    @property
    def health_hook(self) -> Callable[[], Any] | None:
        return self.plan.health_hook

    @property
    def timeout(self) -> float | None:
        return self.options.timeout

    @property
    def queue_timeout(self) -> float | None:
        return self.options.queue_timeout

    @property
    def max_body_size(self) -> int:
        return self.options.max_body_size

    @property
    def max_batch_size(self) -> int:
        return self.options.max_batch_size

    @property
    def max_concurrency(self) -> int:
        return self.options.max_concurrency

    @property
    def extra_paths(self) -> dict[str, str]:
        """GET paths the spec adds, e.g. ``{"models": "/v1/models"}``."""
        return self.plan.extra_paths

    def info(self) -> dict[str, Any]:
        return self.plan.info()

    def snapshot(self) -> dict[str, Any]:
        return {**self.info(), "workers": self.pool.snapshot(), "counts": self.tracker.counts()}


class ServingState:
    """Every endpoint of one server, in the order given; the first is the default one; and what
    applies to the whole server: who may call it (``access``), ``client_timeout``, and the time
    slice of its thread and streaming workers (``slice_ms``, see ``litkit.worker.timeslice``; 0: the kernel's)."""

    def __init__(
        self,
        plans: list[EndpointPlan],
        *,
        access: AccessPolicy | None = None,
        client_timeout: float = 60.0,
        slice_ms: float = 0.0,
        root_text: str | None = None,
        openapi: bool = True,
        previous: ServingState | None = None,
    ) -> None:
        """``previous``: the version this one replaces (a re-run, ``ServerLoop.replace``): an
        endpoint at the same path carries on its history."""
        earlier = {endpoint.path: endpoint for endpoint in previous.endpoints} if previous is not None else {}
        self.endpoints: list[EndpointState] = [EndpointState(plan, earlier.get(plan.path)) for plan in plans]
        self.version: int = previous.version + 1 if previous is not None else 1
        # LitServer's paths and answers (litkit.server.litserve_routes); None under serve().
        self.litserve_face: dict[str, Any] | None = next((plan.litserve_face for plan in plans if plan.litserve_face), None)
        self.litserve = self.litserve_face is not None  # error bodies read {"detail": ...}
        self.max_body_size = max(endpoint.max_body_size for endpoint in self.endpoints)
        self.access = access if access is not None else AccessPolicy(None, (), loopback_only=True)
        self.client_timeout = client_timeout
        self.slice_ms = slice_ms
        # What GET / sends a client that does not ask for HTML (LitServer: "litserve running"); None: the page.
        self.root_text: str | None = root_text
        self.openapi = openapi  # False (LitServer(disable_openapi_url=True)): no /openapi.json, no page

    @property
    def first(self) -> EndpointState:
        return self.endpoints[0]

    def find(self, path: str | None) -> EndpointState:
        """The endpoint at ``path`` (None: the first one).

        Raises:
            ValueError: no endpoint has that path.
        """
        return find_endpoint(self.endpoints, path)

    def health(self) -> tuple[bool, str | None]:
        """(ok, reason): what ``/health`` and ``status()["health"]`` report."""
        if any(endpoint.stopping for endpoint in self.endpoints):
            return False, "the server is stopping"
        for endpoint in self.endpoints:
            ok, reason = endpoint.pool.health()
            if not ok:
                return False, reason if len(self.endpoints) == 1 else f"{endpoint.path}: {reason}"
        return True, None

    async def api_health(self) -> tuple[bool, str | None]:
        """(ok, reason) from each API's own ``health()`` hook (sync or async; LitServe's), called on
        the API object in this process, where ``setup`` has not run; an exception counts as unhealthy."""
        for endpoint in self.endpoints:
            hook = endpoint.health_hook
            if hook is None:
                continue
            try:
                result = await awaited(hook())
            except Exception as error:
                logger.exception("%s.health() raised", endpoint.api_name)
                return False, f"{endpoint.api_name}.health() raised {type(error).__name__}: {error}"
            if not result:
                return False, f"{endpoint.api_name}.health() returned {result!r}"
        return True, None

    async def start(self) -> None:
        """Start every endpoint's workers at once; the first failure cancels the other starts.

        Raises:
            WorkerStartError: a worker of some endpoint failed to start.
        """
        tasks = [asyncio.ensure_future(endpoint.pool.start()) for endpoint in self.endpoints]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)
            # Retrieve every outcome (also when this start is itself cancelled by a stop).
            failures = [error for task in tasks if not task.cancelled() and (error := task.exception()) is not None]
        if failures:
            raise failures[0]

    def begin_stop(self) -> list[ActiveRequest]:
        """Refuse new requests; return the requests still in flight."""
        in_flight: list[ActiveRequest] = []
        for endpoint in self.endpoints:
            endpoint.stopping = True
            in_flight.extend(endpoint.active)
        return in_flight

    def take_requests(self, previous: ServingState | None = None) -> None:
        """From now on this version's endpoints record the requests they admit as its own, and
        take those that ``previous``'s endpoints at the same paths have not admitted yet. The
        listeners of a tracker carried on belonged to the code that served before (``litkit.compat``
        adds its own once ``serve()`` returns), so they are dropped."""
        if previous is not None:
            mine = {endpoint.path: endpoint for endpoint in self.endpoints}
            for endpoint in previous.endpoints:
                endpoint.successor = mine.get(endpoint.path)
        for endpoint in self.endpoints:
            endpoint.tracker.version = self.version
            if self.version > 1:
                endpoint.tracker.listeners.clear()

    @property
    def in_flight(self) -> int:
        """Requests admitted and not yet answered (queued or running), over every endpoint."""
        return sum(len(endpoint.active) for endpoint in self.endpoints)

    async def stop_workers(self) -> None:
        await asyncio.gather(*(endpoint.pool.stop() for endpoint in self.endpoints))

    def info(self) -> dict[str, Any]:
        first = self.first.info()
        paths = {"predict": self.first.path, "health": "/health", "info": "/info", "metrics": "/metrics"}
        return {
            "litkit_version": __version__,
            **{key: first[key] for key in ("api", "workers", "stream", "timeout", "max_body_size")},
            "paths": paths,
            "endpoints": [endpoint.info() for endpoint in self.endpoints],
        }


_Found = TypeVar("_Found", EndpointPlan, EndpointState)


def find_endpoint(endpoints: list[_Found], path: str | None) -> _Found:
    """The endpoint (plan or state) at ``path``; None: the first one.

    Raises:
        ValueError: no endpoint has that path.
    """
    if path is None:
        return endpoints[0]
    for endpoint in endpoints:
        if endpoint.path == path:
            return endpoint
    raise ValueError(f"no endpoint at {path!r}; this server has {', '.join(e.path for e in endpoints)}")
