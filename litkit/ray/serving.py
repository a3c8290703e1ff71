"""``serve(api, backend="ray")``: start or join Ray, deploy with a deadline, and ``RayServer``, the handle.

Ray is started here, on the calling thread: ``ray.init`` from a thread that later exits takes
Ray's daemons with it. Ray Serve's HTTP port is fixed by the first ``serve.start`` in a cluster;
asking for another one later is an error that names the port Serve uses. Replicas that do not fit
the cluster leave a deployment pending forever, so deploying has a deadline, and the error names
the resources asked for and those available.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from ..api import LitAPI
from ..checks import check_int, check_seconds
from ..client.client import ChunkStream, Client
from ..errors import WorkerStartError
from ..kernel import live_view_bundle
from ..options import DEFAULT_API_PATH
from .app import LOCAL_ONLY_OPTIONS, ROUTER_DEPLOYMENT, RayEndpoint, endpoints_of, import_ray_serve, ray_app

__all__ = ["RayServer", "serve_on_ray"]

logger = logging.getLogger("litkit.ray")

_POLL_S = 0.1


class RayServer:
    """A litkit API deployed on Ray Serve. Made by ``litkit.serve(api, backend="ray")``.

    In Jupyter, ``display(server)`` (or ``serve(...)`` as a cell's last expression) shows its live
    view, ``server.widget``; elsewhere it shows as one line of text.

    Attributes:
        url: the base URL of the application, e.g. ``"http://127.0.0.1:8000"``.
        api_path: the endpoint's path, e.g. ``"/predict"``.
        paths: the path of every endpoint.
        name: the Ray Serve application's name.
        state: ``"serving"`` or ``"stopped"``.
    """

    backend = "ray"

    def __init__(self, url: str, name: str, endpoints: list[RayEndpoint], routed: bool, shutdown_serve: bool, shutdown_ray: bool) -> None:
        self.url = url
        self._endpoints = endpoints
        self.paths = [endpoint.path for endpoint in endpoints]
        self.api_path = self.paths[0]
        self.stream_mode = endpoints[0].stream  # the first endpoint's, as Server.stream_mode
        self.name = name
        self.state = "serving"
        # Each deployment of the application -> the paths it serves (the router's: none of its own).
        self._deployments = {endpoint.deployment: [endpoint.path] for endpoint in endpoints}
        if routed:
            self._deployments[ROUTER_DEPLOYMENT] = []
        self._shutdown_serve = shutdown_serve
        self._shutdown_ray = shutdown_ray
        self._client = Client(url)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._dashboard: Any = None  # litkit.notebook.ray_dashboard.RayDashboard, made on first use of .widget

    def predict(self, payload: Any, timeout: float | None = 60.0, path: str | None = None) -> Any:
        """POST ``payload`` to the endpoint at ``path`` (default: the first) and return the decoded JSON answer.

        Raises:
            litkit.HTTPError: the application answered with an error status.
            ValueError: the application has no endpoint at ``path``, or it streams (``stream()`` fits it).
        """
        endpoint = self._find(path)
        if endpoint.stream and not endpoint.spec:  # a spec's request says whether to stream
            raise ValueError(f"the endpoint at {endpoint.path} streams its answer; call server.stream(...) instead of server.predict(...)")
        return self._client.predict(payload, path=endpoint.path, timeout=timeout)

    def stream(self, payload: Any, sse: bool = False, timeout: float | None = 60.0, path: str | None = None) -> ChunkStream:
        """POST ``payload`` to the streaming endpoint at ``path`` (default: the first) and iterate
        over the chunks as they arrive; closing the stream disconnects, which stops the work on the replica.

        Raises:
            litkit.HTTPError: the application refused the request.
            ValueError: the application has no endpoint at ``path``, or it answers with one JSON
                body (``predict()`` fits it).
        """
        endpoint = self._find(path)
        if not endpoint.stream and not endpoint.spec:
            raise ValueError(f"the endpoint at {endpoint.path} answers with one JSON body; call server.predict(...) instead of server.stream(...)")
        return self._client.stream(payload, path=endpoint.path, sse=sse, timeout=timeout)

    def _find(self, path: str | None) -> RayEndpoint:
        for endpoint in self._endpoints:
            if path is None or endpoint.path == path:
                return endpoint
        raise ValueError(f"no endpoint at {path!r}; the Ray Serve application {self.name!r} has {', '.join(self.paths)}")

    def status(self) -> dict[str, Any]:
        """A snapshot: the application's status, its replicas by state (all deployments together),
        each deployment with its paths, status and replicas, and Serve's proxies by state."""
        snapshot: dict[str, Any] = {
            "url": self.url, "state": self.state, "backend": "ray", "application": self.name, "api_path": self.api_path, "paths": list(self.paths),
        }
        if self.state != "serving":
            return {**snapshot, "status": "STOPPED", "replicas": {}, "deployments": [], "proxies": {}, "message": ""}
        serve = import_ray_serve()
        found = serve.status()
        proxies: dict[str, int] = {}
        for proxy in found.proxies.values():
            proxies[_value(proxy)] = proxies.get(_value(proxy), 0) + 1
        application = found.applications.get(self.name)
        if application is None:
            missing = f"no application {self.name!r} in Ray Serve"
            return {**snapshot, "status": "NOT_FOUND", "replicas": {}, "deployments": [], "proxies": proxies, "message": missing}
        deployments: list[dict[str, Any]] = []
        replicas: dict[str, int] = {}
        for name, paths in self._deployments.items():
            deployment = application.deployments.get(name)
            counts = {_value(state): count for state, count in (deployment.replica_states.items() if deployment else ())}
            for state, count in counts.items():
                replicas[state] = replicas.get(state, 0) + count
            deployments.append({"name": name, "paths": list(paths), "status": _value(deployment.status) if deployment else "NOT_FOUND",
                                "replicas": counts, "message": deployment.message if deployment else ""})
        message = application.message or next((d["message"] for d in deployments if d["message"]), "")
        return {**snapshot, "status": _value(application.status), "replicas": replicas, "deployments": deployments, "proxies": proxies, "message": message}

    @property
    def widget(self) -> Any:
        """The live view of this application, an ipywidgets widget (made on first use).

        It refreshes from ``status()`` once a second on its own thread until ``stop()``, then
        keeps the final figures. Its Stop button calls ``stop()``.
        """
        with self._lock:
            if self._dashboard is None:
                from ..notebook.ray_dashboard import RayDashboard  # ipywidgets only when a view is asked for

                self._dashboard = RayDashboard(
                    self.status,
                    title=", ".join(self._deployments_of_apis()),
                    endpoint=self.url + (self.api_path if len(self.paths) == 1 else " " + " ".join(self.paths)),
                    link=self.url + "/health",
                    stop=self.stop,
                )
            return self._dashboard

    def _deployments_of_apis(self) -> list[str]:
        return [name for name, paths in self._deployments.items() if paths]

    def stop(self) -> None:
        """Delete the application; shut down Serve and Ray if ``serve()`` started them. Idempotent."""
        with self._lock:
            if self.state == "stopped":
                return
            self.state = "stopped"
            dashboard = self._dashboard
        serve = import_ray_serve()
        import ray

        if ray.is_initialized():
            if self._shutdown_serve:
                serve.shutdown()
            else:
                serve.delete(self.name)
            if self._shutdown_ray:
                ray.shutdown()
        self._stopped.set()
        if dashboard is not None:
            dashboard.finish()

    def wait(self) -> None:
        """Block until ``stop()`` (Ctrl+C raises KeyboardInterrupt here, as usual)."""
        while not self._stopped.wait(0.5):
            pass

    def __enter__(self) -> RayServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url + self.api_path if len(self.paths) == 1 else f"{self.url} ({len(self.paths)} endpoints: {', '.join(self.paths)})"
        return f"<litkit.RayServer {self.state} {where} (Ray Serve application {self.name!r})>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """In a Jupyter kernel: the live view (with this text repr as fallback)."""
        return live_view_bundle(repr(self), lambda: self.widget)


def serve_on_ray(
    api: LitAPI | dict[str, Any],
    *,
    address: str | None = None,
    replicas: int = 1,
    host: str | None = None,
    port: int = 8000,
    name: str = "litkit",
    route_prefix: str = "/",
    start_timeout: float = 60.0,
    api_path: str = DEFAULT_API_PATH,
    **app_options: Any,
) -> RayServer:
    """Deploy ``api`` on Ray Serve and return once its replicas run (``litkit.serve(backend="ray")``).

    Args:
        api: a ``litkit.LitAPI`` instance; or a dict of several endpoints, ``{"/embed": Embedder(),
            "/chat": litkit.Endpoint(Chat(), timeout=30)}``, deployed in one application, a
            deployment per endpoint behind a router (as ``litkit.ray_app`` does with a dict).
        address: the Ray cluster to join (``"auto"``, ``"ray://head:10001"``); None starts a local
            Ray unless this process is connected to one already.
        replicas: how many replicas serve the API (with a dict: each endpoint, and the router).
        host: the address Ray Serve's HTTP proxy listens on; None: ``"127.0.0.1"`` when this call
            starts Serve, else whatever it listens on (another address is then an error).
        port: its port; 0 picks a free one. Serve's port is fixed by its first start in the cluster.
        name: the Ray Serve application's name (deploying the same name again replaces it).
        route_prefix: where the application sits in Serve's URL space.
        start_timeout: seconds the replicas may take to be placed and run ``setup``.
        api_path: the endpoint's path under ``route_prefix`` (with a dict: the dict's keys).
        **app_options: ``litkit.ray_app``'s other options (``stream``, ``spec``, ``timeout``,
            ``max_batch_size``, ``batch_timeout``, ``ray_actor_options``, ``max_ongoing_requests``,
            ``autoscaling_config``).

    Raises:
        ImportError: Ray Serve is not installed (``pip install 'litkit[ray]'``).
        ValueError: an option is out of range, or Serve already listens on another host or port.
        WorkerStartError: a replica's ``setup`` failed, or the replicas were not running within
            ``start_timeout`` (the message names the resources asked for and available).
    """
    serve = import_ray_serve()
    import ray

    for option, instead in LOCAL_ONLY_OPTIONS.items():
        if option in app_options:
            raise ValueError(f"{option}= is an option of the in-process server; with backend='ray' use {instead}")
    check_seconds("start_timeout", start_timeout)
    if not isinstance(route_prefix, str) or not route_prefix.startswith("/"):
        raise ValueError(f"route_prefix must be a path starting with '/', got {route_prefix!r}")
    app = ray_app(api, api_path=api_path, num_replicas=replicas, **app_options)
    endpoints = endpoints_of(api, api_path, app_options.get("stream"), app_options.get("spec"))
    check_int("port", port, 0, 65535)
    started_ray = False
    if ray.is_initialized():
        if address is not None:
            raise ValueError(
                f"this process is connected to a Ray cluster already, so address={address!r} cannot be honoured; "
                "pass address=None to deploy there, or call ray.shutdown() first"
            )
    else:
        # Here, on the calling thread: a thread that called ray.init and then exits kills Ray's daemons.
        ray.init(address=address)
        started_ray = address is None
    started_serve = False
    try:
        serve_host, serve_port, started_serve = _start_serve(serve, host, port)
        actor_options = app_options.get("ray_actor_options") or {}
        per_replica = {"num_cpus": actor_options.get("num_cpus", 1), **{k: v for k, v in actor_options.items() if k in ("num_gpus", "resources")}}
        asked = {"deployment": ", ".join(endpoint.deployment for endpoint in endpoints), "replicas": replicas, "per_replica": per_replica}
        _deploy(serve, ray, app, name, route_prefix, start_timeout, asked)
    except BaseException:
        if started_serve:
            serve.shutdown()
        if started_ray:
            ray.shutdown()
        raise
    url_host = serve_host
    if serve_host in ("0.0.0.0", "::"):  # every node runs a proxy: this one's, or the head's through Ray Client
        url_host = address.removeprefix("ray://").rsplit(":", 1)[0] if address and address.startswith("ray://") else "127.0.0.1"
    prefix = route_prefix.rstrip("/")
    return RayServer(f"http://{url_host}:{serve_port}{prefix}", name, endpoints, routed=isinstance(api, dict),
                     shutdown_serve=started_serve, shutdown_ray=started_ray)


def _start_serve(serve: Any, host: str | None, port: int) -> tuple[str, int, bool]:
    """Start Ray Serve's proxy on ``host:port`` unless Serve runs already; return its host, its
    port and whether we started it."""
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        host = host or "127.0.0.1"
        if port == 0:
            port = _free_port(host)
        serve.start(http_options={"host": host, "port": port})
        return host, port, True
    running, running_host = client.http_config.port, client.http_config.host
    if host is not None and host != running_host:
        raise ValueError(
            f"Ray Serve in this cluster listens on {running_host} already (its first serve.start fixed it); "
            f"pass host=None (or host={running_host!r}) to deploy there, or call ray.serve.shutdown() first"
        )
    if port not in (0, running):
        raise ValueError(
            f"Ray Serve in this cluster listens on port {running} already (its first serve.start fixed it); "
            f"pass port={running} (or port=0) to deploy there, or call ray.serve.shutdown() first"
        )
    return running_host, running, False


def _deploy(serve: Any, ray: Any, app: Any, name: str, route_prefix: str, start_timeout: float, asked: dict[str, Any]) -> None:
    """Deploy without Ray's wait-forever; poll until RUNNING, a failure, or the deadline."""
    # serve.run blocks until the application runs, forever when the replicas never fit; _run with
    # _blocking=False returns once the application is submitted.
    serve._run(app, _blocking=False, name=name, route_prefix=route_prefix)
    deadline = time.monotonic() + start_timeout
    while True:
        application = serve.status().applications.get(name)
        status = _value(application.status) if application else "NOT_STARTED"
        if status == "RUNNING":
            return
        messages = _messages(application)
        failed = application is not None and any(_value(d.status_trigger) == "REPLICA_STARTUP_FAILED" for d in application.deployments.values())
        if status == "DEPLOY_FAILED" or failed:
            serve.delete(name, _blocking=False)
            raise WorkerStartError(0, f"Ray Serve could not start a replica of {asked['deployment']}", messages)
        if time.monotonic() > deadline:
            # Not blocking: Ray takes its graceful_shutdown_timeout_s (20 s) to delete replicas that never started.
            serve.delete(name, _blocking=False)
            raise WorkerStartError(0, _not_placed(ray, asked, start_timeout, messages))
        time.sleep(_POLL_S)


def _value(enum: Any) -> str:
    return str(getattr(enum, "value", enum))


def _messages(application: Any) -> str:
    if application is None:
        return ""
    found = [application.message] + [d.message for d in application.deployments.values()]
    return "\n".join(m.strip() for m in found if m and m.strip())


def _not_placed(ray: Any, asked: dict[str, Any], start_timeout: float, messages: str) -> str:
    total, available = ray.cluster_resources(), ray.available_resources()
    have = ", ".join(f"{available.get(key, 0):g} of {total[key]:g} {key}" for key in ("CPU", "GPU") if key in total)
    text = (
        f"its replicas were not running within start_timeout={start_timeout:g}s: {asked['replicas']} replica(s) x "
        f"{asked['per_replica']} were asked for, and the cluster has {have or 'no CPU'} available; lower replicas=, "
        "ask less with ray_actor_options={'num_cpus': 0.5}, add nodes, or raise start_timeout if setup is slow"
    )
    return text + (f". Ray Serve says: {messages}" if messages else "")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
