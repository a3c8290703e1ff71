"""Endpoints: what each path of a server serves, each with its own workers, stream mode and limits.

``serve(api)`` makes one endpoint; ``serve({"/embed": Embedder(), "/chat": Endpoint(Chat(), workers=2)})``
makes several on one port. Each endpoint has its own ``WorkerPool`` (its own worker processes) and
its own ``RequestTracker``; ``ServingState`` is the set of them that the HTTP layer and ``Server``
share. Options given to ``serve()`` are the defaults of every endpoint; an ``Endpoint`` overrides
them for its path.

This module validates every endpoint option, so ``serve()`` fails before any process starts.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import time
from typing import Any, Callable, Mapping, Protocol, TypeVar

from .. import __version__
from ..api import LitAPI, api_options, is_async_api, is_streaming_api, resolve_stream
from ..checks import check_batch_timeout, check_int, check_seconds
from ..pool.devices import plan_workers
from ..pool.logs import WorkerLog
from ..pool.pool import WorkerPool
from ..wire.sources import code_origins
from ..pool.tracking import RequestTracker
from ..specs import Spec
from ..wire.pickling import dumps_for
from ..wire.protocol import MAX_FDS_PER_MESSAGE
from ..contract.conventions import litserve_face
from ..contract.hooks import awaited, resolve_request_model
from .access import AccessPolicy
from .authorization import Authorizer, make_authorizer
from .requests_doc import describe_request

__all__ = ["ActiveRequest", "Endpoint", "EndpointPlan", "EndpointState", "ServingState", "ENDPOINT_OPTIONS", "RESERVED_PATHS", "find_endpoint", "plan_endpoints"]

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

# serve() keyword arguments that an Endpoint may set for its own path. A new per-endpoint serve()
# option is added here (and validated in _check_options).
ENDPOINT_OPTIONS = (
    "workers",
    "stream",
    "timeout",
    "queue_timeout",
    "max_queue",
    "max_body_size",
    "max_batch_size",
    "batch_timeout",
    "accelerator",
    "devices",
    "workers_per_device",
    "max_concurrency",
    "spec",
    "cancel_grace",
)
# The options a LitAPI's constructor may carry (litkit.api.api_options), and serve()'s defaults for
# them: an API's value replaces a default; a different value given to serve() or Endpoint() too is
# an error, never silently overridden.
API_OPTION_DEFAULTS = {"max_batch_size": 1, "batch_timeout": 0.0, "stream": None, "spec": None}
# "/" stays free: LitServer serves a spec's API under no prefix ("/"); an endpoint there takes GET /
# too (405), and the page is still at /docs.
RESERVED_PATHS = ("/health", "/info", "/metrics", "/docs", "/openapi.json")
DEFAULT_API_PATH = "/predict"


class Endpoint:
    """One API with its own options, as a value of the dict given to ``serve()``.

    ``litkit.Endpoint(Chat(), workers=2, timeout=30)`` takes any of ``serve()``'s per-endpoint
    keyword arguments (``ENDPOINT_OPTIONS``): ``workers``, ``stream``, ``timeout``, ``queue_timeout``, ``max_queue``,
    ``max_body_size``, ``max_batch_size``, ``batch_timeout``, ``accelerator``, ``devices``,
    ``workers_per_device``, ``max_concurrency``, ``spec``, ``cancel_grace``. Those not given are taken
    from ``serve()``.

    Raises:
        TypeError: an option that is not per-endpoint.
    """

    def __init__(self, api: LitAPI, **options: Any) -> None:
        unknown = sorted(set(options) - set(ENDPOINT_OPTIONS))
        if unknown:
            raise TypeError(
                f"Endpoint() got {', '.join(unknown)}, which is not a per-endpoint option; "
                f"use one of {', '.join(ENDPOINT_OPTIONS)} (host, port, start_timeout, api_key, cors_origins and client_timeout go to serve())"
            )
        self.api = api
        self.options = options

    def __repr__(self) -> str:
        options = "".join(f", {name}={value!r}" for name, value in self.options.items())
        return f"Endpoint({type(self.api).__name__}(){options})"


class EndpointPlan:
    """One endpoint as ``serve()`` validated it: plain data, the spec and the cloudpickled API.

    Made in the caller's interpreter, which holds the API object; everything here can travel to
    the interpreter that runs the server (``litkit.server.host``), which never unpickles the API.
    """

    def __init__(self, path: str, api: LitAPI, options: dict[str, Any], start_timeout: float) -> None:
        """``options``: the endpoint's options as ``_check_options`` returns them."""
        self.path = path
        self.api_name = type(api).__qualname__
        # The API's authorize() and health() hooks (LitServe's) run in this process, on the object
        # itself (None: no hook); an endpoint with one keeps its server in this interpreter.
        self.authorize: Authorizer | None = make_authorizer(api)
        health = getattr(api, "health", None)
        self.health_hook: Callable[[], Any] | None = health if callable(health) else None
        resolve_request_model(api)  # a pydantic request model, resolved where the API's module is
        self.api_bytes = dumps_for(api, "worker processes")
        self.async_api = is_async_api(api)
        # LitServer's conventions (litkit.contract.conventions), and its paths and answers (the face)
        self.litserve_face = litserve_face(api)
        self.litserve = self.litserve_face is not None
        self.code_origins = code_origins(api)  # for the workers' tracebacks (litkit.wire.sources)
        spec: Spec | None = options["spec"]
        self.spec_bytes = None if spec is None else dumps_for(spec, "worker processes")
        self.options = options
        self.start_timeout = start_timeout
        self.workers = len(options["placements"])
        self.stream: bool = options["stream"]
        self.spec = spec
        self.model = (spec.model if spec is not None else None) or self.api_name
        # What the page at / and /openapi.json show of the request: JSON data (litkit.server.requests_doc).
        self.request = describe_request(api, spec, self.model)
        self.created = int(time.time())

    @property
    def extra_paths(self) -> dict[str, str]:
        """GET paths the spec adds, e.g. ``{"models": "/v1/models"}``."""
        if self.spec is None:
            return {}
        prefix = self.path[: -len(self.spec.path)]
        return {name: prefix + path for name, path in self.spec.extra_paths.items()}

    def info(self) -> dict[str, Any]:
        options = self.options
        info = {
            "path": self.path,
            "api": self.api_name,
            "workers": self.workers,
            "stream": self.stream,
            "timeout": options["timeout"],
            "queue_timeout": options["queue_timeout"],
            "max_body_size": options["max_body_size"],
            "max_batch_size": options["max_batch_size"],
            "max_concurrency": options["max_concurrency"],
            "spec": None if self.spec is None else self.spec.name,
        }
        if self.spec is not None:
            info["model"] = self.model
            info.update(self.extra_paths)
        return info


class EndpointState:
    """One endpoint on the server: its configuration, pool, tracker, and requests in flight."""

    def __init__(self, plan: EndpointPlan, previous: EndpointState | None = None) -> None:
        """``previous``: the endpoint at this path in the version this one replaces, whose request
        history (tracker) and output lines (log) this one carries on."""
        options = plan.options
        self.plan = plan
        self.path = plan.path
        self.api_name = plan.api_name
        self.workers = plan.workers
        self.timeout: float | None = options["timeout"]
        self.queue_timeout: float | None = options["queue_timeout"]
        self.authorize = plan.authorize
        self.health_hook = plan.health_hook
        self.max_body_size: int = options["max_body_size"]
        self.max_batch_size: int = options["max_batch_size"]
        self.max_concurrency: int = options["max_concurrency"]
        self.stream: bool = plan.stream
        self.spec: Spec | None = plan.spec
        # A spec's protocol decides the framing (OpenAI chat streams are always SSE).
        self.always_sse = plan.spec is not None and plan.spec.always_sse
        self.litserve = plan.litserve
        self.model = plan.model
        self.created = plan.created
        self.tracker = previous.tracker if previous is not None else RequestTracker()
        log = previous.pool.log if previous is not None else WorkerLog(plan.path)
        self.pool = WorkerPool(
            plan.api_bytes,
            count=plan.workers,
            stream=plan.stream,
            max_queue=options["max_queue"],
            start_timeout=plan.start_timeout,
            tracker=self.tracker,
            max_batch_size=options["max_batch_size"],
            batch_timeout=options["batch_timeout"],
            placements=options["placements"],
            max_concurrency=options["max_concurrency"],
            async_api=plan.async_api,
            spec=plan.spec_bytes,
            log=log,
            cancel_grace=options["cancel_grace"],
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
        self.endpoints = [EndpointState(plan, earlier.get(plan.path)) for plan in plans]
        self.version = previous.version + 1 if previous is not None else 1
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
            except Exception as error:  # noqa: BLE001 - a failing check is an unhealthy API, not a failed server
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


# -- planning: serve()'s arguments to validated endpoints ---------------------------------------


def plan_endpoints(api: Any, api_path: str, defaults: dict[str, Any], start_timeout: float) -> list[EndpointPlan]:
    """Validate ``serve()``'s ``api`` (one API, or a dict of paths to APIs or Endpoints) and options.

    Raises:
        TypeError: an API is not a LitAPI instance, or cannot be pickled.
        ValueError: a path or an option is out of range.
    """
    if not isinstance(api, Mapping):
        api_path = _api_path_of(api, api_path)
    if isinstance(api, Mapping):
        if not api:
            raise ValueError("serve() got an empty dict; map at least one path to an API, e.g. {'/predict': MyAPI()}")
        if api_path != DEFAULT_API_PATH:
            raise ValueError("api_path applies to serve(api) only; with a dict of endpoints the keys are the paths")
        if defaults["spec"] is not None:
            raise ValueError("with a dict of endpoints pass spec per endpoint: {'/': litkit.Endpoint(api, spec=...)}")
        entries = [(path, _as_endpoint(value), f"endpoint path {path!r}") for path, value in api.items()]
        for path, endpoint, _ in entries:
            own = api_options(endpoint.api).get("api_path")
            if own is not None and own != path:
                raise ValueError(f"{type(endpoint.api).__name__} was made with api_path={own!r} but is served at {path!r}; give the path in one place")
    else:
        if defaults["spec"] is not None and api_path != DEFAULT_API_PATH:
            raise ValueError(
                f"with spec=... the API is served at the spec's paths ({defaults['spec'].path}); to put them "
                f"under a prefix, serve({{{api_path!r}: litkit.Endpoint(api, spec=...)}})"
            )
        entries = [(api_path, _as_endpoint(api), "api_path")]
    endpoints = []
    seen: set[str] = set()
    for path, endpoint, label in entries:
        endpoint_api = endpoint.api
        options = _check_options(endpoint_api, _merge_options(endpoint_api, defaults, endpoint.options))
        _check_path(path, label)
        if options["spec"] is not None:
            # A spec's paths are fixed (clients expect them); a dict key puts them under a prefix.
            path = ("" if label == "api_path" else path.rstrip("/")) + options["spec"].path
            _check_path(path, label)
        plan = EndpointPlan(path, endpoint_api, options, start_timeout)
        for taken in (plan.path, *plan.extra_paths.values()):
            if taken in seen:
                raise ValueError(f"two endpoints use the path {taken}; give each its own path")
            seen.add(taken)
        endpoints.append(plan)
    return endpoints


def _api_path_of(api: Any, api_path: str) -> str:
    """The path of one API: ``api_path``, or the API's own (``MyAPI(api_path=...)``) in place of the default.

    Raises:
        ValueError: both name a path, and not the same one.
    """
    own = api_options(api).get("api_path")
    if own is None or own == api_path:
        return api_path
    if api_path != DEFAULT_API_PATH:
        raise ValueError(f"{type(api).__name__} was made with api_path={own!r} but is served at {api_path!r}; give the path in one place")
    return own  # type: ignore[no-any-return]


def _merge_options(api: Any, defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """serve()'s defaults, then the options the API was made with, then the Endpoint's.

    Raises:
        ValueError: the API and serve() (or Endpoint()) set one option to different values.
    """
    merged = dict(defaults)
    for name, value in api_options(api).items():
        if name not in API_OPTION_DEFAULTS:
            continue  # api_path: placed by plan_endpoints
        other = given.get(name, defaults[name])
        explicit = name in given or defaults[name] != API_OPTION_DEFAULTS[name]
        if explicit and other is not value and other != value:
            raise ValueError(
                f"{type(api).__name__} was made with {name}={value!r} but is served with {name}={other!r}; "
                "set it in one place (on the API or in serve()/Endpoint())"
            )
        merged[name] = value
    merged.update(given)
    return merged


def _as_endpoint(value: Any) -> Endpoint:
    return value if isinstance(value, Endpoint) else Endpoint(value)


def _check_path(path: Any, label: str) -> None:
    if not isinstance(path, str) or not path.startswith("/") or path in RESERVED_PATHS or "//" in path:
        raise ValueError(f"{label} must be a path starting with '/' other than {', '.join(RESERVED_PATHS)}, got {path!r}")


def _check_options(api: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Validate one endpoint's options; return them with ``stream`` resolved to a bool and the
    workers' ``placements`` (one per worker, see ``litkit.pool.devices``) added."""
    if isinstance(api, type):
        raise TypeError(f"serve() takes an API instance, got the class {api.__name__}; call it: serve({api.__name__}())")
    if not isinstance(api, LitAPI):
        raise TypeError(f"serve() takes a litkit.LitAPI instance, got {type(api).__name__}; define `class MyAPI(litkit.LitAPI)` with setup/decode_request/predict/encode_response")
    _check_predict(api)
    check_int("workers", options["workers"], 1, 1024)
    check_int("max_queue", options["max_queue"], 1, 10**9)
    check_int("max_body_size", options["max_body_size"], 1, 2**32 - 2**21)
    if options["timeout"] is not None:
        check_seconds("timeout", options["timeout"], " or None")
    if options["queue_timeout"] is not None:
        check_seconds("queue_timeout", options["queue_timeout"], " or None")
    _check_scheduling(api, options["max_batch_size"], options["batch_timeout"], options["max_concurrency"])
    check_seconds("cancel_grace", options["cancel_grace"])
    spec = options["spec"]
    if spec is not None:
        if not isinstance(spec, Spec):
            raise TypeError(f"spec must be a litkit spec such as litkit.specs.OpenAIChat(), got {type(spec).__name__}")
        # LitServer's APIs batch a spec's streams in LitServe's order (litkit.contract.conventions).
        if options["max_batch_size"] > 1 and not spec.batchable and litserve_face(api) is None:
            raise ValueError(
                f"spec={type(spec).__name__}() answers a batch's streams under litkit.LitServer only (in LitServe's order); "
                "leave max_batch_size at 1, or serve with ls.LitServer"
            )
        if spec.batchable and is_streaming_api(api):
            raise ValueError(f"spec={type(spec).__name__}() answers with one response; make {type(api).__name__}.predict `return` instead of `yield`")
    stream = resolve_stream(api, options["stream"])
    placements = plan_workers(options["accelerator"], options["devices"], options["workers"], options["workers_per_device"])
    return {**options, "stream": stream, "placements": placements}


def _check_predict(api: LitAPI) -> None:
    """Refuse an API that does not define ``predict``: it would start and then fail every request."""
    cls = type(api)
    if getattr(cls, "predict", None) is not LitAPI.predict and callable(getattr(api, "predict", None)):
        return
    own = [name for klass in cls.__mro__ if klass is not LitAPI and klass is not object for name in vars(klass) if not name.startswith("__")]
    close = difflib.get_close_matches("predict", own, n=1, cutoff=0.6)
    hint = f"; {cls.__name__} has {close[0]!r}: did you mean predict?" if close else ""
    raise TypeError(f"{cls.__name__} does not define predict(self, x), the hook every request calls{hint}")


def _check_scheduling(api: LitAPI, max_batch_size: Any, batch_timeout: Any, max_concurrency: Any) -> None:
    """Validate the batching and concurrency options against each other and the API."""
    check_int("max_batch_size", max_batch_size, 1, MAX_FDS_PER_MESSAGE)
    check_batch_timeout(batch_timeout)
    check_int("max_concurrency", max_concurrency, 1, 10_000)
    name = type(api).__name__
    if max_concurrency > 1 and not is_async_api(api):
        raise ValueError(
            f"max_concurrency={max_concurrency} needs an async predict, but {name}.predict is a plain function; "
            "write `async def predict` (or an async generator), or use workers= to run sync requests in parallel"
        )
    if max_batch_size > 1 and is_async_api(api):
        raise ValueError(f"max_batch_size={max_batch_size} is not supported with an async predict yet; make {name}.predict a plain function, or leave max_batch_size at 1")
