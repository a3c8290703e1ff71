"""``LitServer``: LitServe's server class over ``litkit.serve()``, so ``import litkit as ls`` runs LitServe code.

Every argument of LitServe 0.2.19's ``LitServer(...)`` and ``run(...)`` either does what LitServe
does with it, or raises a TypeError that names it and says what to use instead; nothing is
accepted and dropped. ``docs/migrating-from-litserve.md`` lists each one.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import warnings
from typing import Any, Mapping, Sequence

from ..api import LitAPI, api_options, is_async_api
from ..contract.conventions import following_litserve
from ..kernel import in_jupyter_kernel
from ..options import DEFAULT_API_PATH, path_of
from ..server import Endpoint, Server, serve
from ..server.page import LITSERVE_ROOT_TEXT
from ..server.placement import answering_root_with, in_this_interpreter
from ..server.terminal import banner, block_until_interrupted
from .arguments import accelerator_and_devices, cors_origins_of, payload_size, unsupported, workers_per_path
from .callbacks import check_callbacks, request_listener, trigger, with_callbacks
from .client_file import write_client_file
from .face import check_route_path, server_face
from .loggers import LoggerRelay, check_loggers

__all__ = ["LitServer", "queue_timeout_of"]

logger = logging.getLogger("litkit.compat")

API_KEY_VARIABLE = "LIT_SERVER_API_KEY"
# Requests each worker of an async API runs at once under LitServer. LitServe sets no bound (each
# request becomes a task on the worker's loop); litkit's workers hold a pipe per request they run,
# so it bounds them, high enough that requests which mostly await never queue behind each other,
# low enough that a few workers stay far from the usual limit of 1024 open files. Beyond it,
# requests wait in the queue (LitServer's timeout). serve(api, max_concurrency=N) sets another.
ASYNC_CONCURRENCY = 64
# Seconds each worker may take to load the API and run setup() under LitServer. LitServe waits for
# its workers without a limit, and its users load models that take minutes; serve()'s default (one
# minute) would refuse code that runs under LitServe. A setup() that hangs still ends, with the
# worker's output and traceback.
SETUP_TIMEOUT_S = 900.0
_LOG_LEVELS = {
    "critical": logging.CRITICAL, "error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG, "trace": logging.DEBUG,
}


def queue_timeout_of(timeout: Any) -> float | None:
    """LitServe's ``timeout`` (seconds a request may wait in the queue; ``False`` or ``-1``: none)
    as ``serve(queue_timeout=...)``.

    Raises:
        ValueError: not a positive number, ``False`` or ``-1``.
    """
    if timeout is False or (timeout == -1 and not isinstance(timeout, bool)):
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, or False or -1 for no limit, got {timeout!r}")
    return float(timeout)


class LitServer:
    """LitServe's ``LitServer``: one API, a list of them (each at its ``api_path``), or a dict
    ``{path: api}``; ``run()`` serves them with ``litkit.serve()``.

    ``run()`` blocks until Ctrl+C in a script, as LitServe's does; in a Jupyter kernel it returns
    the running ``litkit.Server`` at once. Arguments are checked here, before ``run()``.

    Raises:
        TypeError: an argument litkit does not support (the message says what to use instead).
        ValueError: an argument is out of range, or ``LIT_SERVER_API_KEY`` and an ``authorize``
            hook are both set.
    """

    def __init__(
        self,
        lit_api: LitAPI | Sequence[LitAPI] | Mapping[str, LitAPI],
        accelerator: str = "auto",
        devices: int | str = "auto",
        workers_per_device: int | Sequence[int] | Mapping[str, int] = 1,
        timeout: float | bool = 30,
        healthcheck_path: str = "/health",
        info_path: str = "/info",
        shutdown_path: str = "/shutdown",
        enable_shutdown_api: bool = False,
        model_metadata: dict | None = None,
        spec: Any = None,
        max_payload_size: int | None = None,
        track_requests: bool = False,
        callbacks: Any = None,
        middlewares: Any = None,
        loggers: Any = None,
        fast_queue: bool = False,
        disable_openapi_url: bool = False,
        max_batch_size: int | None = None,
        batch_timeout: float = 0.0,
        stream: bool = False,
        api_path: str | None = None,
        loop: Any = None,
        restart_workers: bool = False,
    ) -> None:
        self._paths = _paths_of(lit_api)  # [(path, api)], checked for collisions
        single = len(self._paths) == 1 and not isinstance(lit_api, Mapping)
        legacy = {"max_batch_size": max_batch_size, "stream": stream or None, "api_path": api_path, "spec": spec}
        given = ", ".join(name for name, value in legacy.items() if value is not None)
        if given and not single:
            raise ValueError(f"LitServer({given}=...) applies to a single API; with several, pass it to each ls.LitAPI(...)")
        if given:  # as LitServe 0.2.1x warns: these moved to LitAPI
            moved = "pass max_batch_size and batch_timeout to ls.LitAPI(...) (and stream, api_path, spec)"
            warnings.warn(f"LitServer({given}=...) is deprecated, as in LitServe: {moved}", DeprecationWarning, stacklevel=2)
        if batch_timeout != 0.0 and max_batch_size is None:
            # LitServe drops it without a word; here an argument that would do nothing is an error.
            raise ValueError(
                f"LitServer(batch_timeout={batch_timeout!r}) does nothing without max_batch_size; "
                "pass both, or better ls.LitAPI(max_batch_size=..., batch_timeout=...)"
            )
        if loop not in (None, "auto"):
            raise unsupported("loop=...", "custom LitServe loops are not supported; leave loop out")
        if enable_shutdown_api:
            stop = "stop the server with Ctrl+C, or server.stop() on the Server that run() returns in a notebook"
            raise unsupported("enable_shutdown_api=True", f"litkit has no shutdown endpoint; {stop}")
        if shutdown_path != "/shutdown":
            raise unsupported(f"shutdown_path={shutdown_path!r}", "litkit has no shutdown endpoint; leave shutdown_path out")
        try:
            json.dumps(model_metadata)
        except (TypeError, ValueError):
            raise ValueError("model_metadata must be JSON serializable") from None
        self.model_metadata = model_metadata
        self._cors_origins = cors_origins_of(middlewares)
        self._callbacks = check_callbacks(callbacks)
        self._loggers = check_loggers(loggers)
        if not isinstance(fast_queue, bool):
            raise ValueError(f"fast_queue must be True or False, got {fast_queue!r}")
        # fast_queue=True asks LitServe for ZeroMQ between its server and workers; litkit's workers
        # take requests over direct pipes either way, which is that fast path already.
        # restart_workers=True asks for what litkit always does: a worker that dies is replaced.
        if not isinstance(disable_openapi_url, bool):
            raise ValueError(f"disable_openapi_url must be True or False, got {disable_openapi_url!r}")
        self._openapi = not disable_openapi_url  # True: /openapi.json, /docs and the page at / (litkit.server.page)
        if track_requests not in (True, False):
            raise ValueError(f"track_requests must be True or False, got {track_requests!r}")
        self._queue_timeout = queue_timeout_of(timeout)
        self._accelerator, self._devices = accelerator_and_devices(accelerator, devices)
        self._workers = workers_per_path(workers_per_device, [path for path, _ in self._paths])
        self._max_body_size = payload_size(max_payload_size)
        self._legacy = {name: value for name, value in (("max_batch_size", max_batch_size), ("stream", stream or None), ("spec", spec)) if value is not None}
        if max_batch_size is not None:
            self._legacy["batch_timeout"] = batch_timeout
        if api_path is not None:
            if not isinstance(api_path, str) or not api_path.startswith("/"):
                raise ValueError(f"api_path must start with '/', e.g. '/predict', got {api_path!r}")
            self._paths = [(api_path, self._paths[0][1])]
            self._workers = {api_path: next(iter(self._workers.values()))}
        self._api_key = _api_key_from_environment([api for _, api in self._paths])
        api_paths = [path for path, _ in self._paths]
        self.healthcheck_path = check_route_path("healthcheck_path", healthcheck_path, api_paths)
        self.info_path = check_route_path("info_path", info_path, api_paths)
        self.max_payload_size = max_payload_size
        self.track_requests = track_requests
        self.timeout = timeout
        streams = {path: bool(self._legacy.get("stream") or api.stream) for path, api in self._paths}
        face = server_face(self.healthcheck_path, self.info_path, model_metadata, self._accelerator, self._devices, workers_per_device,
                           timeout, streams, max_payload_size, track_requests)
        # Copies that follow LitServe's conventions and carry its paths (litkit.contract.conventions).
        self._paths = [(path, following_litserve(with_callbacks(api, self._callbacks), face)) for path, api in self._paths]
        self.server: Server | None = None
        self._serving_state: Any = None  # the server's own state (litkit.server.endpoints.ServingState)

    @property
    def active_requests(self) -> int | None:
        """Requests queued or running (None before ``run()``, or unless ``track_requests=True``, as in LitServe)."""
        serving = self._serving_state
        if serving is None or not self.track_requests:
            return None
        # The trackers' live counts, not status(): on_request reads this for every request.
        return sum(counts["queued"] + counts["running"] for counts in (endpoint.tracker.counts() for endpoint in serving.endpoints))

    def _prepare(self, serving: Any) -> None:
        """The server's state, before its first request (it may arrive while the workers start)."""
        self._serving_state = serving
        if self._callbacks:
            listener = request_listener(self._callbacks, self)
            for endpoint in serving.endpoints:  # on_request / on_response
                endpoint.tracker.listeners.append(listener)

    def run(
        self,
        host: str = "127.0.0.1",
        port: int | str = 8000,
        num_api_servers: int | None = None,
        log_level: str = "info",
        generate_client_file: bool = True,
        api_server_worker_type: str | None = None,
        pretty_logs: bool = False,
        **kwargs: Any,
    ) -> Server | None:
        """Serve; block until Ctrl+C in a script, return the ``litkit.Server`` at once in Jupyter.

        ``host`` defaults to ``127.0.0.1`` (LitServe's is ``0.0.0.0``): any other address needs
        ``LIT_SERVER_API_KEY`` or an ``authorize`` hook on every API.

        Raises:
            TypeError: an argument litkit does not support (``num_api_servers`` above 1,
                ``api_server_worker_type="process"``, ``pretty_logs=True``, uvicorn's ``**kwargs``).
        """
        if kwargs:
            raise TypeError(f"LitServer.run() got {', '.join(sorted(kwargs))}: LitServe passes these to uvicorn, which litkit does not use; leave them out")
        if num_api_servers not in (None, 1):
            raise TypeError(
                f"LitServer.run(num_api_servers={num_api_servers!r}): litkit runs one HTTP server thread in front of its workers; "
                "leave num_api_servers out (workers_per_device adds workers)"
            )
        if api_server_worker_type not in (None, "thread"):
            worker_type = f"LitServer.run(api_server_worker_type={api_server_worker_type!r})"
            raise TypeError(f"{worker_type}: litkit's HTTP server is a thread of this process; leave api_server_worker_type out")
        if pretty_logs:
            raise TypeError("LitServer.run(pretty_logs=True): litkit does not format logs; leave pretty_logs out")
        if log_level not in _LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(_LOG_LEVELS)}, got {log_level!r}")
        if isinstance(port, str) and port.isdigit():
            port = int(port)  # else serve() refuses it, naming the value
        logging.getLogger("litkit").setLevel(_LOG_LEVELS[log_level])
        trigger(self._callbacks, "on_server_start", litserver=self)
        relay = LoggerRelay(self._loggers)
        # LitServe's callbacks, request tracking and model metadata reach into the server's own
        # state, which then has to live in this interpreter (not in a sub-interpreter or a process
        # of its own); so does a script's server, whose process runs nothing else while it blocks.
        reaches_in = self._callbacks or self.track_requests
        here = (
            "LitServer's callbacks or track_requests read the server's state" if reaches_in
            else None if in_jupyter_kernel()
            else "a script's LitServer.run() runs nothing else while it serves"
        )
        # GET / answers "litserve running" to clients that do not ask for HTML, as LitServe does; browsers get the page.
        with in_this_interpreter(here, self._prepare) if here is not None else contextlib.nullcontext(), answering_root_with(LITSERVE_ROOT_TEXT, self._openapi):
            server = serve(
                self._endpoints(),
                host=host,
                port=port,  # type: ignore[arg-type]
                start_timeout=SETUP_TIMEOUT_S,
                max_body_size=self._max_body_size,
                api_key=self._api_key,
                cors_origins=self._cors_origins,
                on_log=relay.put if self._loggers else None,
            )
        try:
            if generate_client_file:
                write_client_file(server)
        except BaseException:
            server.stop()  # e.g. client.py could not be written: no server is left running
            raise
        self.server = server  # published once everything above is in place

        def end() -> None:
            trigger(self._callbacks, "on_server_end", litserver=self)

        thread_name = f"litkit-loggers-{server.url.rsplit(':', 1)[1]}"
        if in_jupyter_kernel():
            if self._loggers or self._callbacks:  # feeds the loggers, then calls on_server_end once the server stops
                relay.start(thread_name, until=lambda: server.state in ("stopped", "replaced"), on_end=end)
            return server
        if self._loggers:
            relay.start(thread_name, until=lambda: False)
        try:
            block_until_interrupted(server, banner(server, "Ctrl+C to stop"))
        finally:
            relay.stop()
            end()
        return None

    def _endpoints(self) -> dict[str, Endpoint]:
        """One endpoint per API; an API with a spec at the spec's paths (under no prefix), as in LitServe."""
        endpoints = {}
        for path, api in self._paths:
            options = self._options(path, api)
            spec = options.get("spec", api_options(api).get("spec"))
            if spec is None:
                endpoints[path] = Endpoint(api, **options)
                continue
            own = api_options(api).get("api_path")
            if own not in (None, DEFAULT_API_PATH, spec.path):
                spec = copy.copy(spec)
                spec.path = own  # as LitServe: a spec API's own api_path replaces the spec's POST path
            api = copy.copy(api)  # the spec and path move from the API to its endpoint
            api._litkit_options = {name: value for name, value in api_options(api).items() if name not in ("api_path", "spec")}
            endpoints["/"] = Endpoint(api, **{**options, "spec": spec})
        return endpoints

    def _options(self, path: str, api: LitAPI) -> dict[str, Any]:
        options = {
            "queue_timeout": self._queue_timeout,
            "accelerator": self._accelerator,
            "devices": self._devices,
            "workers_per_device": self._workers[path],
            **self._legacy,
        }
        batched = options.get("max_batch_size", api_options(api).get("max_batch_size", 1)) > 1
        if is_async_api(api) and not batched:
            options["max_concurrency"] = ASYNC_CONCURRENCY  # LitServe runs an async API's requests concurrently
        return options


def _paths_of(lit_api: Any) -> list[tuple[str, LitAPI]]:
    if isinstance(lit_api, Mapping):
        pairs = list(lit_api.items())
        for path, api in pairs:
            path_of(api, path, api_options(api).get("api_path"), default=None)
    elif isinstance(lit_api, (list, tuple)):
        pairs = [(api_options(api).get("api_path", DEFAULT_API_PATH), api) for api in lit_api]
    else:
        pairs = [(api_options(lit_api).get("api_path", DEFAULT_API_PATH), lit_api)]
    if not pairs:
        raise ValueError("LitServer() got no API; pass one ls.LitAPI, a list of them, or a dict {path: api}")
    for _, api in pairs:
        if not isinstance(api, LitAPI):
            raise TypeError(f"LitServer() takes ls.LitAPI instances (import litkit as ls), got {type(api).__name__}")
    paths = [path for path, _ in pairs]
    duplicates = sorted({path for path in paths if paths.count(path) > 1})
    if duplicates:
        raise ValueError(f"several APIs use the path {', '.join(duplicates)}; give each its own api_path, e.g. ls.LitAPI(api_path='/v2/predict')")
    return pairs


def _api_key_from_environment(apis: list[LitAPI]) -> str | None:
    """``LIT_SERVER_API_KEY``, which every request must then carry (``X-API-Key``), or None.

    Raises:
        ValueError: the key is also set while an API has its own ``authorize`` (LitServe would then
            ignore the key for that API), or the key is too short for litkit.
    """
    key = os.environ.get(API_KEY_VARIABLE)
    if not key:
        return None
    hooked = [type(api).__name__ for api in apis if getattr(api, "authorize", None) is not None]
    if hooked:
        raise ValueError(
            f"{API_KEY_VARIABLE} is set and {', '.join(hooked)} defines authorize(); LitServe would check only authorize() "
            f"and ignore the key for it. Unset {API_KEY_VARIABLE}, or compare the key inside authorize()"
        )
    from ..server.access import check_api_key

    try:
        check_api_key(key)
    except ValueError as error:
        raise ValueError(f"{API_KEY_VARIABLE}: {error}; set a longer key, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'") from None
    return key
