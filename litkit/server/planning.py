"""Planning: ``serve()``'s ``api`` and options to validated endpoints, before any process starts.

``serve(api)`` makes one endpoint; ``serve({"/embed": Embedder(), "/chat": Endpoint(Chat(), workers=2)})``
makes several on one port. Options given to ``serve()`` are the defaults of every endpoint; an
``Endpoint`` overrides them for its path, and a ``LitAPI(...)``'s own options (``max_batch_size``,
``batch_timeout``, ``stream``, ``api_path``, ``spec``) are taken unless another value is set for them.
Each value is checked by ``litkit.options``; what depends on the API object or the machine (its
``predict``, the devices there are) is checked here, so ``serve()`` fails before any process starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import time
from typing import Any, Callable, Mapping

from ..api import LitAPI, api_options, is_async_api, is_streaming_api, resolve_stream
from ..contract.conventions import litserve_face
from ..contract.hooks import resolve_request_model
from ..options import DEFAULT_API_PATH, ENDPOINT_OPTIONS, EndpointOptions, ServerOptions, check_option_names, check_path, claim_path, path_of
from ..pool.devices import plan_workers
from ..specs import Spec
from ..wire.pickling import dumps_for
from ..wire.sources import code_origins
from .authorization import Authorizer, make_authorizer
from .requests_doc import describe_request

__all__ = ["DEFAULT_API_PATH", "ENDPOINT_OPTIONS", "RESERVED_PATHS", "Endpoint", "EndpointPlan", "plan_endpoints"]

# "/" stays free: LitServer serves a spec's API under no prefix ("/"); an endpoint there takes GET /
# too (405), and the page is still at /docs.
RESERVED_PATHS = ("/health", "/info", "/metrics", "/docs", "/openapi.json")


class Endpoint:
    """One API with its own options, as a value of the dict given to ``serve()``.

    ``litkit.Endpoint(Chat(), workers=2, timeout=30)`` takes any of ``serve()``'s per-endpoint
    keyword arguments (``ENDPOINT_OPTIONS``): ``workers``, ``stream``, ``timeout``, ``queue_timeout``, ``max_queue``,
    ``max_body_size``, ``max_batch_size``, ``batch_timeout``, ``accelerator``, ``devices``,
    ``workers_per_device``, ``max_concurrency``, ``spec``, ``cancel_grace``. Those not given are taken
    from ``serve()``. Their values are checked by the ``serve()`` (or ``ray_app()``) that serves it.

    Raises:
        TypeError: an option that is not per-endpoint.
    """

    def __init__(self, api: LitAPI, **options: Any) -> None:
        check_option_names(options, "Endpoint()")
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

    def __init__(self, path: str, api: LitAPI, options: EndpointOptions, placements: list[Any], start_timeout: float) -> None:
        """``options``: the endpoint's, checked, ``stream`` resolved to a bool; ``placements``: one per worker (``litkit.pool.devices``)."""
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
        spec: Spec | None = options.spec
        self.spec_bytes = None if spec is None else dumps_for(spec, "worker processes")
        self.options = options
        self.placements = placements
        self.start_timeout = start_timeout
        self.workers = len(placements)
        self.stream = bool(options.stream)
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
            "timeout": options.timeout,
            "queue_timeout": options.queue_timeout,
            "max_body_size": options.max_body_size,
            "max_batch_size": options.max_batch_size,
            "max_concurrency": options.max_concurrency,
            "spec": None if self.spec is None else self.spec.name,
        }
        if self.spec is not None:
            info["model"] = self.model
            info.update(self.extra_paths)
        return info


def plan_endpoints(api: Any, options: ServerOptions) -> list[EndpointPlan]:
    """Validate ``serve()``'s ``api`` (one API, or a dict of paths to APIs or Endpoints) against ``options``.

    Raises:
        TypeError: an API is not a LitAPI instance, or cannot be pickled.
        ValueError: a path or an option is out of range.
    """
    defaults, api_path = options.endpoint, options.api_path
    if isinstance(api, Mapping):
        if not api:
            raise ValueError("serve() got an empty dict; map at least one path to an API, e.g. {'/predict': MyAPI()}")
        if api_path != DEFAULT_API_PATH:
            raise ValueError("api_path applies to serve(api) only; with a dict of endpoints the keys are the paths")
        if defaults.spec is not None:
            raise ValueError("with a dict of endpoints pass spec per endpoint: {'/': litkit.Endpoint(api, spec=...)}")
        entries = [(path, _as_endpoint(value), f"endpoint path {path!r}") for path, value in api.items()]
        for path, endpoint, _ in entries:
            path_of(endpoint.api, path, api_options(endpoint.api).get("api_path"), default=None)
    else:
        api_path = path_of(api, api_path, api_options(api).get("api_path"))
        if defaults.spec is not None and api_path != DEFAULT_API_PATH:
            raise ValueError(
                f"with spec=... the API is served at the spec's paths ({defaults.spec.path}); to put them "
                f"under a prefix, serve({{{api_path!r}: litkit.Endpoint(api, spec=...)}})"
            )
        entries = [(api_path, _as_endpoint(api), "api_path")]
    plans = []
    taken: set[str] = set()
    for path, endpoint, label in entries:
        endpoint_api = endpoint.api
        _check_api(endpoint_api)
        endpoint_options = EndpointOptions.of(endpoint.options).over(defaults).with_api_options(endpoint_api, api_options(endpoint_api))
        endpoint_options, placements = _check_options(endpoint_api, endpoint_options)
        check_path(path, label, RESERVED_PATHS)
        if endpoint_options.spec is not None:
            # A spec's paths are fixed (clients expect them); a dict key puts them under a prefix.
            path = ("" if label == "api_path" else path.rstrip("/")) + endpoint_options.spec.path
            check_path(path, label, RESERVED_PATHS)
        plan = EndpointPlan(path, endpoint_api, endpoint_options, placements, options.start_timeout)
        for claimed in (plan.path, *plan.extra_paths.values()):
            claim_path(taken, claimed)
        plans.append(plan)
    return plans


def _as_endpoint(value: Any) -> Endpoint:
    return value if isinstance(value, Endpoint) else Endpoint(value)


def _check_api(api: Any) -> None:
    if isinstance(api, type):
        raise TypeError(f"serve() takes an API instance, got the class {api.__name__}; call it: serve({api.__name__}())")
    if not isinstance(api, LitAPI):
        raise TypeError(
            f"serve() takes a litkit.LitAPI instance, got {type(api).__name__}; "
            "define `class MyAPI(litkit.LitAPI)` with setup/decode_request/predict/encode_response"
        )
    _check_predict(api)


def _check_options(api: LitAPI, options: EndpointOptions) -> tuple[EndpointOptions, list[Any]]:
    """Check one endpoint's options against its API and this machine; return them with ``stream``
    resolved to a bool, and the workers' placements (one per worker, see ``litkit.pool.devices``)."""
    _check_scheduling(api, options.max_batch_size, options.max_concurrency)
    stream = resolve_stream(api, options.stream)
    spec = options.spec
    if spec is not None:
        if not isinstance(spec, Spec):
            raise TypeError(f"spec must be a litkit spec such as litkit.specs.OpenAIChat(), got {type(spec).__name__}")
        # A batch's streams each get the spec's envelope, in litkit's order as in LitServe's
        # (litkit.worker.batch); a batch that does not stream has no such answer under serve().
        if options.max_batch_size > 1 and not spec.batchable and litserve_face(api) is None and not stream:
            raise ValueError(
                f"spec={type(spec).__name__}() answers a batch under litkit.serve() only when predict streams (a generator that yields "
                "one item per request at each step); make predict a generator, leave max_batch_size at 1, or serve with ls.LitServer"
            )
        if spec.batchable and is_streaming_api(api):
            raise ValueError(f"spec={type(spec).__name__}() answers with one response; make {type(api).__name__}.predict `return` instead of `yield`")
    placements = plan_workers(options.accelerator, options.devices, options.workers, options.workers_per_device)
    return dataclasses.replace(options, stream=stream), placements


def _check_predict(api: LitAPI) -> None:
    """Refuse an API that does not define ``predict``: it would start and then fail every request."""
    cls = type(api)
    if getattr(cls, "predict", None) is not LitAPI.predict and callable(getattr(api, "predict", None)):
        return
    own = [name for klass in cls.__mro__ if klass is not LitAPI and klass is not object for name in vars(klass) if not name.startswith("__")]
    close = difflib.get_close_matches("predict", own, n=1, cutoff=0.6)
    hint = f"; {cls.__name__} has {close[0]!r}: did you mean predict?" if close else ""
    raise TypeError(f"{cls.__name__} does not define predict(self, x), the hook every request calls{hint}")


def _check_scheduling(api: LitAPI, max_batch_size: int, max_concurrency: int) -> None:
    """Check the batching and concurrency options against the API's ``predict``."""
    name = type(api).__name__
    if max_concurrency > 1 and not is_async_api(api):
        raise ValueError(
            f"max_concurrency={max_concurrency} needs an async predict, but {name}.predict is a plain function; "
            "write `async def predict` (or an async generator), or use workers= to run sync requests in parallel"
        )
    if max_batch_size > 1 and is_async_api(api):
        raise ValueError(
            f"max_batch_size={max_batch_size} is not supported with an async predict yet; make {name}.predict a plain function, or leave max_batch_size at 1"
        )
