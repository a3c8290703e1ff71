"""``serve()``: options to a running ``Server``, replacing the one a re-run or an earlier call left on the port.

``serve()`` gathers its keyword arguments into ``litkit.options.ServerOptions`` (checked there),
plans the endpoints (``litkit.server.planning``), picks where the server runs
(``litkit.server.placement``) and returns once every worker is ready, so the next line of a
notebook cell can call the endpoint with any blocking client.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

from ..api import LitAPI
from ..errors import WorkerStartError
from ..kernel import current_cell
from ..options import DEFAULT_API_PATH, DEFAULT_MAX_BODY_SIZE, EndpointOptions, RayEndpointOptions, RayServerOptions, ServerOptions
from ..specs import Spec
from ..worker.timeslice import slice_ms_from_environment
from . import registry
from .access import AccessPolicy, check_api_key, check_cors_origins, is_loopback_host, make_api_key, proxied_hosts
from .controls import new_secret
from .host import ServerRecipe
from .interpreters import unavailable_reason
from .links import local_url
from .listening import listen
from .placement import host_type as where_to_serve
from .placement import root_answer
from .planning import Endpoint, plan_endpoints
from .server import Server

__all__ = ["DEFAULT_MAX_BODY_SIZE", "serve"]

logger = logging.getLogger("litkit.server")


def serve(
    api: LitAPI | Mapping[str, LitAPI | Endpoint],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    stream: bool | None = None,
    api_path: str = DEFAULT_API_PATH,
    timeout: float | None = None,
    queue_timeout: float | None = None,
    max_queue: int = 1024,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    start_timeout: float = 60.0,
    max_batch_size: int = 1,
    batch_timeout: float = 0.0,
    accelerator: str = "auto",
    devices: int | list[int] | None = None,
    workers_per_device: int | None = None,
    max_concurrency: int = 1,
    spec: Spec | None = None,
    api_key: str | None = None,
    cors_origins: Sequence[str] = (),
    cancel_grace: float = 5.0,
    client_timeout: float = 60.0,
    on_log: Callable[[str, Any], None] | None = None,
    backend: str = "local",
    **backend_options: Any,
) -> Server:
    """Serve ``api`` over HTTP from this process and return once every worker is ready.

    The server runs on its own thread; the workers are fresh Python processes that receive the API
    object through cloudpickle, so a class defined in a notebook cell or a script's ``__main__``
    works. Calling ``serve()`` again with a port this process already serves, or re-running, in
    Jupyter, the cell that started a server (``port=0`` too: it keeps the port), replaces that
    server without a gap: the new workers start while the old ones answer on the same listener,
    then take every new request; the old ones finish what they had and stop. A change of ``host``,
    or of where the server runs, stops the old server first instead (docs/design.md, "Re-running
    serve()"). ``api_key="auto"`` keeps the key of the server it replaces.

    Args:
        api: a ``litkit.LitAPI`` instance; or a dict of several endpoints on one server,
            ``{"/embed": Embedder(), "/chat": litkit.Endpoint(Chat(), workers=2)}``, each with its own
            workers. The options from ``workers`` to ``cancel_grace`` (``litkit.options.ENDPOINT_OPTIONS``)
            are the defaults of every endpoint, and ``litkit.Endpoint(api, **options)`` overrides
            them for one; ``host``, ``port``, ``api_path``, ``start_timeout``, ``api_key``,
            ``cors_origins``, ``client_timeout``, ``on_log`` and ``backend`` apply to the whole
            server. Options the API was made with (``MyAPI(max_batch_size=8)``) are taken too; the
            same option set to another value here is an error.
        host: the address to listen on; the default listens on loopback only.
        port: the TCP port; 0 picks a free one (read it from ``server.url``).
        workers: how many worker processes run the API. Each takes one request at a time, or up to
            ``max_batch_size`` at once as a batch, or up to ``max_concurrency`` at once (async APIs).
        stream: None to stream exactly when ``predict`` is a generator function; True or False to
            insist (a mismatch is an error).
        api_path: the path of the predict endpoint.
        timeout: seconds from a request's arrival to its first response byte; past it the client
            gets 504 and the work is cancelled. None for no limit.
        queue_timeout: seconds a request may wait in the queue until a worker takes it (LitServe's
            ``timeout``); past it the client gets 504 and the request never runs. None for no limit.
        max_queue: requests that may wait for a free worker; past it the server answers 503.
        max_body_size: the largest request body in bytes; larger ones get 413.
        start_timeout: seconds each worker may take to load the API and run ``setup``.
        max_batch_size: above 1, a free worker takes up to this many queued requests at once and
            runs them through ``batch``, one ``predict`` call, and ``unbatch`` (docs/batching.md).
        batch_timeout: seconds a partial batch may wait for more requests, counted from its
            oldest request's arrival in the queue; 0 sends whatever is queued at once.
        accelerator: ``"auto"`` (CUDA when a GPU is visible, else the CPU), ``"cpu"`` or ``"cuda"``
            (docs/devices.md).
        devices: with CUDA, which GPUs: None for all visible, a count for the first N, or a list
            of indices among the visible GPUs.
        workers_per_device: workers on each device; None uses ``workers``.
        max_concurrency: requests each worker runs at once; above 1 needs ``async def predict``
            (or an async generator), which then runs on an event loop in the worker (docs/async.md).
        spec: a protocol to speak instead of litkit's own, e.g. ``litkit.specs.OpenAIChat()``:
            the API is then served at the spec's paths (``/v1/chat/completions``, ``/v1/models``).
        api_key: a key every caller must send (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``;
            ``/health`` stays open), or ``"auto"`` to generate one (read it from ``server.api_key``).
            Required when ``host`` is not a loopback address, unless every API has its own
            ``authorize`` hook (``litkit.server.authorization``).
        cors_origins: web origins (e.g. ``["http://localhost:3000"]``, or ``["*"]``) whose pages may
            call the server from a browser; requests from any other foreign ``Origin`` get 403.
        cancel_grace: seconds a cancelled request's worker may keep running (a hook that neither
            yields nor checks ``litkit.cancelled()``) before it is killed and replaced.
        client_timeout: seconds a client may take to send its request headers, to send its body,
            or to read a pending part of the response; past it the connection is closed (and the
            request cancelled). Also how long an idle keep-alive connection stays open.
        backend: ``"local"`` (this process and its workers) or ``"ray"``: deploy on Ray Serve instead
            and return a ``litkit.ray.RayServer`` with the same ``url``, ``paths``, ``predict``,
            ``stream``, ``status()``, ``stop()`` and, in Jupyter, a live view (docs/ray.md;
            ``pip install 'litkit[ray]'``). A dict of endpoints becomes one Ray Serve application,
            a deployment per endpoint behind a router; ``litkit.Endpoint`` may then set
            ``stream``, ``spec``, ``timeout``, ``max_batch_size`` and ``batch_timeout``.
        **backend_options: with ``backend="ray"``, ``litkit.ray.serve_on_ray``'s own options:
            ``address``, ``replicas``, ``name``, ``route_prefix``, ``ray_actor_options``,
            ``max_ongoing_requests``, ``autoscaling_config``.
        on_log: called with ``(key, value)`` for each ``self.log(key, value)`` a hook makes in a
            worker, on the server's thread (so it must be quick: hand the entry to a queue);
            without it such entries are dropped with one warning. ``litkit.LitServer(loggers=...)``
            uses it.

    Raises:
        TypeError: ``api`` is not a LitAPI, or cloudpickle cannot serialize it.
        ValueError: an argument is out of range, ``stream`` contradicts ``predict``, the devices
            asked for are not there (e.g. ``accelerator="cuda"`` on a machine without a GPU), or
            ``LITKIT_SLICE_MS`` is not a valid time slice.
        PortInUseError: another process holds the port.
        WorkerStartError: a worker failed to start; no process is left behind. When it replaced a
            server, that one goes on serving, and the message says so.
    """
    # Every option as one checked value that knows which ones were set (litkit.options).
    endpoint = (EndpointOptions if backend == "local" else RayEndpointOptions).of_call(
        workers=workers, stream=stream, timeout=timeout, queue_timeout=queue_timeout, max_queue=max_queue, max_body_size=max_body_size,
        max_batch_size=max_batch_size, batch_timeout=batch_timeout, accelerator=accelerator, devices=devices,
        workers_per_device=workers_per_device, max_concurrency=max_concurrency, spec=spec, cancel_grace=cancel_grace,
    )
    options = (ServerOptions if backend == "local" else RayServerOptions).of_call(
        endpoint, host=host, port=port, api_path=api_path, start_timeout=start_timeout, client_timeout=client_timeout,
        api_key=api_key, cors_origins=cors_origins, on_log=on_log,
    )
    if backend != "local" or backend_options:
        return _serve_on_backend(api, options, backend, backend_options)
    plans = plan_endpoints(api, options)
    slice_ms = slice_ms_from_environment()  # a bad LITKIT_SLICE_MS fails here, not in each worker
    unavailable_reason()  # a bad LITKIT_SUBINTERPRETER fails here too
    cell = current_cell()
    host, port, api_key, client_timeout, on_log = options.host, options.port, options.api_key, options.client_timeout, options.on_log
    old = registry.server_to_replace(cell, port)
    if api_key == "auto" and isinstance(old, Server) and old.api_key is not None:
        api_key = old.api_key  # its callers hold that key: a re-run keeps it
    access = _access_policy(host, api_key, options.cors_origins, authorized=all(plan.authorize is not None for plan in plans))
    registry.stop_servers_of_earlier_runs(cell, keep=old)
    host_type = where_to_serve(plans)
    if isinstance(old, Server):
        # A re-run: the new version starts beside the old one, on its listener (docs/design.md).
        recipe = ServerRecipe(plans, access, client_timeout, slice_ms, old.url, old._control_secret, on_log, *root_answer())
        why = old._why_not_replaceable(recipe, host, host_type)
        if why is None:
            try:
                new = old._replace(recipe, options.start_timeout)
            except WorkerStartError as error:
                raise error.with_traceback(None) from None  # as below: the worker's traceback is what matters
            registry.register(new, cell)
            return new
        logger.info("stopping the server at %s before serving again on a new listener: %s", old.url, why)
    if old is not None:
        old._shutdown("replaced", 10.0)
    sockets, port = listen(host, port)
    recipe = ServerRecipe(plans, access, client_timeout, slice_ms, local_url(host, port), new_secret(), on_log, *root_answer())
    server = Server(recipe, port, host_type(recipe, sockets, f"litkit-server-{port}", lambda: None), host)
    registry.register(server, cell)
    try:
        server._start(options.start_timeout)
    except WorkerStartError as error:
        # The message carries the worker's own traceback; litkit's frames from here down to the
        # pool (9 of them) would only stand between the user's call and it.
        raise error.with_traceback(None) from None
    return server


def _serve_on_backend(api: Any, options: ServerOptions, backend: str, backend_options: dict[str, Any]) -> Any:
    """``serve(backend="ray")``: hand the options given to ``litkit.ray``, which refuses the ones
    it cannot honour by name."""
    if backend == "local":
        raise TypeError(
            f"serve() got unexpected keyword arguments {sorted(backend_options)}; "
            f"{', '.join(sorted(backend_options))} are not options of the local server (with backend='ray': "
            "address, replicas, name, route_prefix, ray_actor_options, max_ongoing_requests, autoscaling_config)"
        )
    if backend != "ray":
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    from ..ray.serving import serve_on_ray

    return serve_on_ray(api, **options.given_values(), **backend_options)


def _access_policy(host: str, api_key: str | None, cors_origins: Any, authorized: bool = False) -> AccessPolicy:
    """Check the security arguments; a non-loopback host without a key is refused, unless every
    endpoint's API checks its callers itself (``authorized``: each has an ``authorize`` hook)."""
    if api_key == "auto":
        api_key = make_api_key()
    check_api_key(api_key)
    origins = check_cors_origins(cors_origins)
    loopback = is_loopback_host(host)
    if not loopback and api_key is None and not authorized:
        raise ValueError(
            f"host={host!r} lets other machines reach the server, so it needs an API key: pass "
            "api_key='auto' (read the key from server.api_key) or api_key='<a secret of 16+ characters>' "
            "(under litkit.LitServer: set LIT_SERVER_API_KEY, or define authorize() on the API); "
            "or keep the default host='127.0.0.1'"
        )
    return AccessPolicy(api_key, origins, loopback_only=loopback, proxied_hosts=proxied_hosts())
