"""``ray_app()``: a LitAPI as a Ray Serve application, for ``serve.run``, ``serve run`` and YAML configs.

The API object is serialized here, in the caller's process, with cloudpickle (so classes from a
notebook cell or a script's ``__main__`` travel by value, as they do to litkit's own workers) and
the replicas receive bytes. Ray is imported only when this module is.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NamedTuple

import cloudpickle

from ..api import LitAPI, api_options, is_async_api, resolve_stream
from ..checks import check_int
from ..options import DEFAULT_API_PATH, RayEndpointOptions, check_path, claim_path, path_of
from ..specs import Spec
from ..wire.pickling import dumps_for

__all__ = ["ray_app", "import_ray_serve", "endpoints_of", "RayEndpoint", "LOCAL_ONLY_OPTIONS", "ROUTER_DEPLOYMENT"]

ROUTER_DEPLOYMENT = "Router"  # the ingress of an application with several endpoints (litkit.ray.router)
_RAY_DEFAULT_ONGOING = 5  # Ray Serve's default max_ongoing_requests; a batch must fit in it
# What litkit.Endpoint(api, ...) may set per endpoint on Ray.
_ENDPOINT_OPTIONS = ("stream", "spec", "timeout", "max_batch_size", "batch_timeout")
_RESERVED_PATHS = ("/health",)

# serve() options of the in-process server that Ray cannot honour, with what to use instead.
LOCAL_ONLY_OPTIONS = {
    "workers": "replicas= (ray_app: num_replicas=)",
    "max_queue": "nothing yet: Ray Serve queues requests itself (its max_queued_requests, unlimited by default)",
    "max_body_size": "a limit in a proxy in front of Ray Serve",
    "accelerator": "ray_actor_options={'num_gpus': 1} (setup then receives 'cuda:0')",
    "devices": "ray_actor_options={'num_gpus': 1} per replica",
    "workers_per_device": "replicas= with ray_actor_options={'num_gpus': 0.5}",
    "max_concurrency": "max_ongoing_requests=",
    "api_key": "authentication in a proxy in front of Ray Serve",
    "cors_origins": "Ray Serve's HTTP middlewares",
    "cancel_grace": "nothing: a cancelled sync hook runs to its end on its thread (check litkit.cancelled())",
    "client_timeout": "Ray Serve's http_options keep_alive_timeout_s / request_timeout_s",
}


class RayEndpoint(NamedTuple):
    """One endpoint of a ``ray_app`` application: its POST path, its deployment's name, whether it
    streams, and whether a spec decides that per request."""

    path: str
    deployment: str
    stream: bool
    spec: bool


def import_ray_serve() -> Any:
    """``ray.serve``, or an ImportError that says how to install it."""
    try:
        from ray import serve
    except ImportError as error:
        raise ImportError(
            f"litkit's Ray backend needs Ray Serve, which is not installed ({error}); "
            "install the extra: pip install 'litkit[ray]'"
        ) from error
    return serve


def ray_app(
    api: LitAPI | dict[str, Any],
    *,
    api_path: str = DEFAULT_API_PATH,
    stream: bool | None = None,
    spec: Spec | None = None,
    timeout: float | None = None,
    max_batch_size: int = 1,
    batch_timeout: float = 0.0,
    num_replicas: int = 1,
    ray_actor_options: dict[str, Any] | None = None,
    max_ongoing_requests: int | None = None,
    autoscaling_config: dict[str, Any] | None = None,
) -> Any:
    """The Ray Serve application that serves ``api`` with litkit's HTTP contract (docs/ray.md).

    ``serve.run(litkit.ray_app(MyAPI()))`` deploys it; so do ``serve run module:app`` and a Serve
    YAML config naming ``module:app``. Each replica runs ``setup(device)`` once (``"cuda:0"`` when
    Ray gave it a GPU, else ``"cpu"``) and answers ``POST api_path`` as ``litkit.serve`` does.

    Args:
        api: a ``litkit.LitAPI`` instance; or a dict of several endpoints, ``{"/embed": Embedder(),
            "/chat": litkit.Endpoint(Chat(), timeout=30)}``, each a deployment of its own behind
            one router (``Endpoint`` may set ``stream``, ``spec``, ``timeout``, ``max_batch_size``
            and ``batch_timeout``; the deployment options below apply to each endpoint).
        api_path: the path of the endpoint under the application's route prefix.
        stream: None to stream exactly when ``predict`` is a generator function; True or False to insist.
        spec: a protocol such as ``litkit.specs.OpenAIChat()``, served at the spec's paths.
        timeout: seconds from the replica receiving a request to its first response byte; past it
            the client gets 504 and the work is cancelled. None for no limit.
        max_batch_size: above 1, Ray Serve's batching (``serve.batch``) groups up to this many
            requests per replica into one ``batch``/``predict``/``unbatch`` call.
        batch_timeout: seconds a partial batch waits for more requests (``batch_wait_timeout_s``).
        num_replicas: how many replicas (ignored by Ray when ``autoscaling_config`` is given, so
            leave it at 1 then).
        ray_actor_options: each replica's resources, e.g. ``{"num_cpus": 0.5}`` or ``{"num_gpus": 1}``.
        max_ongoing_requests: requests Ray hands a replica at once (None: Ray Serve's default, or
            ``max_batch_size`` when larger). An async API runs that many at once; sync hooks run
            one request at a time per replica (as in a litkit worker) while the others wait in
            the replica; with batching they are the requests a batch can gather.
        autoscaling_config: Ray Serve's autoscaling, e.g. ``{"min_replicas": 1, "max_replicas": 4}``.

    Raises:
        ImportError: Ray Serve is not installed (``pip install 'litkit[ray]'``).
        TypeError: ``api`` is not a LitAPI instance, or cloudpickle cannot serialize it.
        ValueError: an argument is out of range, or the options contradict each other or the API.
    """
    serve = import_ray_serve()
    deployment = _deployment_options(num_replicas, ray_actor_options, max_ongoing_requests, autoscaling_config)
    options = RayEndpointOptions.of_call(stream=stream, spec=spec, timeout=timeout, max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    if isinstance(api, dict):
        return _several_endpoints(serve, api, api_path, options, deployment)
    path = path_of(api, api_path, api_options(api).get("api_path"))
    options = options.with_api_options(api, api_options(api))
    if isinstance(options.spec, Spec):
        if path != DEFAULT_API_PATH:
            raise ValueError(
                f"with spec=... the API is served at the spec's paths ({options.spec.path}); to put them under a prefix, deploy with route_prefix="
            )
        path = options.spec.path
    return _endpoint(serve, api, path, options, deployment, type(api).__name__)


def _endpoint(serve: Any, api: Any, path: str, options: RayEndpointOptions, deployment: dict[str, Any], name: str) -> Any:
    """One endpoint's deployment, bound to the bytes its replicas start from."""
    _check_api(api)
    streaming = resolve_stream(api, options.stream)
    _check_options(api, streaming, path, options)
    config = {
        "api": dumps_for(api, "Ray replicas"),
        "spec": None if options.spec is None else dumps_for(options.spec, "Ray replicas"),
        "api_path": path,
        "stream": streaming,
        "timeout": options.timeout,
        "max_batch_size": options.max_batch_size,
        "batch_timeout": float(options.batch_timeout),
        "sys_path": [entry or os.getcwd() for entry in sys.path],
    }
    deployment = dict(deployment)
    if deployment.get("max_ongoing_requests") is None:
        deployment.pop("max_ongoing_requests", None)
        if options.max_batch_size > _RAY_DEFAULT_ONGOING:  # a batch must fit in what Ray hands a replica
            deployment["max_ongoing_requests"] = options.max_batch_size
    from .replica import Replica

    return serve.deployment(Replica, name=name, **deployment).bind(cloudpickle.dumps(config))


def _several_endpoints(serve: Any, apis: dict[Any, Any], api_path: str, defaults: RayEndpointOptions, deployment: dict[str, Any]) -> Any:
    """``ray_app({"/a": A(), "/b": litkit.Endpoint(B(), timeout=30)})``: a deployment per
    endpoint behind one ``Router`` (``litkit.ray.router``)."""
    if api_path != DEFAULT_API_PATH:
        raise ValueError("with a dict of endpoints the paths are its keys; leave api_path at its default")
    if defaults.spec is not None:
        raise ValueError("with a dict of endpoints pass spec per endpoint: {'/': litkit.Endpoint(api, spec=...)}")
    if not apis:
        raise ValueError("ray_app() got an empty dict; give at least one {path: api}")
    routes: dict[str, str] = {}
    endpoints: dict[str, Any] = {}
    names: set[str] = set()
    taken: set[str] = set()
    for key, value in apis.items():
        check_path(key, "each key of the dict (an endpoint's path)", _RESERVED_PATHS)
        api, own = _unpack_endpoint(key, value)
        path_of(api, key, api_options(api).get("api_path"), default=None)
        options = RayEndpointOptions.of(own).over(defaults).with_api_options(api, api_options(api))
        spec = options.spec
        path = _post_path(key, spec)
        endpoints[path] = _endpoint(serve, api, path, options, deployment, _unique_name(api, names))
        prefix = key.rstrip("/")
        for claimed in (path, *(prefix + extra for extra in (spec.extra_paths.values() if isinstance(spec, Spec) else ()))):
            claim_path(taken, claimed)
            routes[claimed] = path
    from .router import Router

    router = {**deployment, "ray_actor_options": {"num_cpus": 0.1}}  # it only relays; the endpoints compute
    router.pop("max_ongoing_requests", None)
    return serve.deployment(Router, name=ROUTER_DEPLOYMENT, **router).bind(routes, endpoints)


def endpoints_of(api: LitAPI | dict[str, Any], api_path: str = DEFAULT_API_PATH, stream: bool | None = None, spec: Spec | None = None) -> list[RayEndpoint]:
    """The endpoints ``ray_app(api, api_path=..., stream=..., spec=...)`` deploys, named as it
    names their deployments; call it once ``ray_app`` has accepted the same arguments."""
    defaults = RayEndpointOptions.of_call(stream=stream, spec=spec)
    if not isinstance(api, dict):
        options = defaults.with_api_options(api, api_options(api))
        path = options.spec.path if isinstance(options.spec, Spec) else path_of(api, api_path, api_options(api).get("api_path"))
        return [RayEndpoint(path, type(api).__name__, resolve_stream(api, options.stream), options.spec is not None)]
    names: set[str] = set()
    found = []
    for key, value in api.items():
        inner, own = _unpack_endpoint(key, value)
        options = RayEndpointOptions.of(own).over(defaults).with_api_options(inner, api_options(inner))
        found.append(RayEndpoint(_post_path(key, options.spec), _unique_name(inner, names), resolve_stream(inner, options.stream), options.spec is not None))
    return found


def _post_path(key: str, spec: Any) -> str:
    """The POST path of the endpoint at ``key`` of a dict: the key, or under it the spec's path."""
    return key.rstrip("/") + spec.path if isinstance(spec, Spec) else key


def _unique_name(api: Any, names: set[str]) -> str:
    """The deployment's name: the API's class, numbered when another endpoint (or the router) has it already."""
    name = type(api).__name__
    name = name if name not in names and name != ROUTER_DEPLOYMENT else f"{name}_{len(names)}"
    names.add(name)
    return name


def _unpack_endpoint(path: str, value: Any) -> tuple[Any, dict[str, Any]]:
    """A dict value: an API, or ``litkit.Endpoint(api, **options)`` with the options Ray can honour."""
    if isinstance(value, LitAPI) or not (hasattr(value, "api") and hasattr(value, "options")):
        return value, {}
    own = dict(value.options)
    for option in own:
        if option not in _ENDPOINT_OPTIONS:
            instead = LOCAL_ONLY_OPTIONS.get(option, "ray_app()'s own arguments")
            raise ValueError(f"Endpoint(..., {option}=) at {path} is an option of the in-process server; with Ray use {instead}")
    return value.api, own


def _deployment_options(num_replicas: Any, ray_actor_options: Any, max_ongoing_requests: Any, autoscaling_config: Any) -> dict[str, Any]:
    """Ray Serve's deployment options, checked."""
    check_int("num_replicas", num_replicas, 1, 100_000)
    if autoscaling_config is not None and num_replicas != 1:
        raise ValueError(
            f"num_replicas={num_replicas} and autoscaling_config both set the replica count; "
            "give min_replicas/max_replicas in autoscaling_config and leave num_replicas at 1"
        )
    if ray_actor_options is not None and not isinstance(ray_actor_options, dict):
        raise TypeError(f"ray_actor_options must be a dict such as {{'num_cpus': 0.5}}, got {type(ray_actor_options).__name__}")
    if max_ongoing_requests is not None:
        check_int("max_ongoing_requests", max_ongoing_requests, 1, 100_000)
    options: dict[str, Any] = {"max_ongoing_requests": max_ongoing_requests}
    if autoscaling_config is not None:
        options["autoscaling_config"] = autoscaling_config
    else:
        options["num_replicas"] = num_replicas
    if ray_actor_options is not None:
        options["ray_actor_options"] = ray_actor_options
    return options


def _check_api(api: Any) -> None:
    if isinstance(api, type):
        raise TypeError(f"ray_app() takes an API instance, got the class {api.__name__}; call it: ray_app({api.__name__}())")
    if not isinstance(api, LitAPI):
        raise TypeError(f"ray_app() takes a litkit.LitAPI instance, got {type(api).__name__}; define `class MyAPI(litkit.LitAPI)`")
    if callable(getattr(api, "authorize", None)):
        # Refused rather than skipped: an API that checks its callers must never be served open.
        raise TypeError(
            f"{type(api).__name__} defines authorize(), which Ray Serve replicas do not call (Ray's proxy has no per-request "
            "hook before the body); authenticate in a proxy or a Ray Serve HTTP middleware in front of the application and "
            "remove authorize, or serve it with litkit.serve(), which calls it"
        )


def _check_options(api: LitAPI, streaming: bool, api_path: Any, options: RayEndpointOptions) -> None:
    """Check one endpoint's options against its API (their values were checked by ``RayEndpointOptions``)."""
    name = type(api).__name__
    check_path(api_path, "api_path", _RESERVED_PATHS)
    spec, max_batch_size = options.spec, options.max_batch_size
    if max_batch_size > 1 and (streaming or is_async_api(api)):
        raise ValueError(
            f"max_batch_size={max_batch_size} on Ray works with a plain (sync, non-streaming) predict; "
            f"{name}.predict is {'a generator' if streaming else 'async'}: leave max_batch_size at 1, or serve it with litkit.serve()"
        )
    if spec is not None:
        if not isinstance(spec, Spec):
            raise TypeError(f"spec must be a litkit spec such as litkit.specs.OpenAIChat(), got {type(spec).__name__}")
        if max_batch_size > 1:
            raise ValueError(f"spec={type(spec).__name__}() works without batching on Ray; leave max_batch_size at 1")
