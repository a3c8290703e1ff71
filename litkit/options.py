"""Serving options as typed values, each option checked here once, for every entry point.

``EndpointOptions`` holds what one endpoint may set (``serve()``'s per-endpoint keyword arguments,
``litkit.Endpoint(api, **options)``, a ``LitAPI(...)``'s constructor options, ``LitServer``'s and
``ray_app``'s share of them); ``ServerOptions`` what applies to a whole server. Both are frozen and
know which options their caller set (``given``): an endpoint's own options win over ``serve()``'s,
and ``serve(backend="ray")`` hands Ray only what was set.

What a value is allowed to be is checked here (``check_option``); what depends on the API object
(a batch with an async ``predict``, ``stream=True`` without a generator) or on the backend (the
devices there are, Ray's deployment) is checked by the backend that serves it. A shared module:
both ``litkit.server`` and ``litkit.ray`` import it, and it imports nothing of litkit's but the checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence, TypeVar

from .checks import check_batch_timeout, check_int, check_seconds

__all__ = [
    "DEFAULT_API_PATH",
    "DEFAULT_MAX_BODY_SIZE",
    "ENDPOINT_OPTIONS",
    "MAX_BATCH_SIZE",
    "EndpointOptions",
    "RayEndpointOptions",
    "RayServerOptions",
    "ServerOptions",
    "check_option",
    "check_option_names",
    "check_path",
    "claim_path",
    "path_of",
]

DEFAULT_API_PATH = "/predict"
DEFAULT_MAX_BODY_SIZE = 16 * 1024 * 1024
# The largest batch a litkit worker takes: a batch's response pipes travel to it in one message,
# which carries at most this many file descriptors (litkit.wire.protocol.MAX_FDS_PER_MESSAGE; a
# test checks that they agree). Ray's replicas take larger batches (RAY_MAX_BATCH_SIZE).
MAX_BATCH_SIZE = 253
RAY_MAX_BATCH_SIZE = 100_000


def check_option(name: str, value: Any, max_batch_size: int = MAX_BATCH_SIZE) -> None:
    """Check one endpoint option's value, by its ``serve()`` name; an option whose values depend
    on the machine or the API (``accelerator``, ``devices``, ``workers_per_device``, ``spec``) is
    left to the backend.

    Raises:
        ValueError: the value is out of range; the message names the option and what it takes.
    """
    if name in ("timeout", "queue_timeout"):
        if value is not None:
            check_seconds(name, value, " or None")
    elif name == "stream":
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"stream must be True, False or None (stream exactly when predict is a generator function), got {value!r}")
    elif name == "batch_timeout":
        check_batch_timeout(value)
    elif name == "cancel_grace":
        check_seconds(name, value)
    elif name in _INT_RANGES:
        low, high = _INT_RANGES[name]
        check_int(name, value, low, max_batch_size if name == "max_batch_size" else high)


_INT_RANGES = {
    "workers": (1, 1024), "max_queue": (1, 10**9), "max_body_size": (1, 2**32 - 2**21), "max_batch_size": (1, MAX_BATCH_SIZE), "max_concurrency": (1, 10_000),
}


_Options = TypeVar("_Options", bound="EndpointOptions")


@dataclass(frozen=True)
class EndpointOptions:
    """One endpoint's options, checked when made (``check_option``); ``serve()`` documents each.

    ``given``: the names its caller set, which win over ``serve()``'s when an endpoint's options
    are laid over them (``over``); the rest hold their defaults.

    Raises:
        ValueError: a value is out of range.
    """

    workers: int = 1
    stream: bool | None = None
    timeout: float | None = None
    queue_timeout: float | None = None
    max_queue: int = 1024
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    max_batch_size: int = 1
    batch_timeout: float = 0.0
    accelerator: str = "auto"
    devices: int | list[int] | None = None
    workers_per_device: int | None = None
    max_concurrency: int = 1
    spec: Any = None  # a litkit.specs.Spec: checked by the backend (this module may not import specs)
    cancel_grace: float = 5.0
    given: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    # The largest max_batch_size of the backend these options are for.
    max_batch_size_limit: ClassVar[int] = MAX_BATCH_SIZE

    def __post_init__(self) -> None:
        for name in ENDPOINT_OPTIONS:
            check_option(name, getattr(self, name), self.max_batch_size_limit)

    @classmethod
    def of(cls: type[_Options], options: Mapping[str, Any], who: str = "Endpoint()") -> _Options:
        """The options named in ``options``, each marked given; the rest at their defaults.

        Raises:
            TypeError: a name that is not a per-endpoint option (``who`` got it).
            ValueError: a value is out of range.
        """
        check_option_names(options, who)
        return cls(**options, given=frozenset(options))

    @classmethod
    def of_call(cls: type[_Options], **arguments: Any) -> _Options:
        """The options of a call with every option as a keyword argument (``serve()``'s), those
        that differ from their default marked given."""
        return cls(**arguments, given=frozenset(_set_of(arguments, _ENDPOINT_DEFAULTS)))

    def over(self, defaults: _Options) -> _Options:
        """These options where given, ``defaults`` elsewhere."""
        return dataclasses.replace(defaults, **self.given_values(), given=defaults.given | self.given)

    def with_values(self: _Options, **options: Any) -> _Options:
        """These options with ``options`` set (and marked given)."""
        return dataclasses.replace(self, **options, given=self.given | frozenset(options))

    def given_values(self) -> dict[str, Any]:
        """The options the caller set, by name."""
        return {name: getattr(self, name) for name in ENDPOINT_OPTIONS if name in self.given}

    def with_api_options(self: _Options, api: Any, api_options: Mapping[str, Any]) -> _Options:
        """These options with those ``api`` was made with (``MyAPI(max_batch_size=8)``:
        ``api_options``, by ``litkit.api.api_options``) where it set them; its ``api_path`` is placed by ``path_of``.

        Raises:
            ValueError: the API and these options set one option to different given values.
        """
        own = {name: value for name, value in api_options.items() if name != "api_path"}
        for name, value in own.items():
            other = getattr(self, name)
            if name in self.given and other is not value and other != value:
                raise ValueError(
                    f"{type(api).__name__} was made with {name}={value!r} but is served with {name}={other!r}; "
                    "set it in one place (on the API or in serve()/Endpoint())"
                )
        return self.with_values(**own)


@dataclass(frozen=True)
class RayEndpointOptions(EndpointOptions):
    """``EndpointOptions`` for a Ray Serve deployment, whose replicas take batches larger than a litkit worker's."""

    max_batch_size_limit: ClassVar[int] = RAY_MAX_BATCH_SIZE


ENDPOINT_OPTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(EndpointOptions) if f.name != "given")
_ENDPOINT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(EndpointOptions)}


@dataclass(frozen=True)
class ServerOptions:
    """What applies to a whole server made by ``serve()`` (``serve()`` documents each), with
    ``endpoint``, the defaults of every endpoint.

    ``api_key`` and ``cors_origins`` are checked by the server's access policy
    (``litkit.server.access``), which also decides what a host that is not loopback needs.

    Raises:
        ValueError: a value is out of range.
        TypeError: ``on_log`` is not callable.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_path: str = DEFAULT_API_PATH
    start_timeout: float = 60.0
    client_timeout: float = 60.0
    api_key: str | None = None
    cors_origins: Sequence[str] = ()
    on_log: Callable[[str, Any], None] | None = None
    endpoint: EndpointOptions = field(default_factory=EndpointOptions)
    given: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check_host()
        check_int("port", self.port, 0, 65535)
        check_seconds("start_timeout", self.start_timeout)
        check_seconds("client_timeout", self.client_timeout)
        if self.on_log is not None and not callable(self.on_log):
            raise TypeError(f"on_log must be a function of (key, value), got {type(self.on_log).__name__}")

    def _check_host(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"host must be an address such as '127.0.0.1', got {self.host!r}")

    @classmethod
    def of_call(cls, endpoint: EndpointOptions, **arguments: Any) -> ServerOptions:
        """The server-wide options of a call with each as a keyword argument (``serve()``'s),
        those that differ from their default marked given."""
        return cls(**arguments, endpoint=endpoint, given=frozenset(_set_of(arguments, _SERVER_DEFAULTS)))

    def given_values(self) -> dict[str, Any]:
        """Every option the caller set, server-wide and per endpoint, by ``serve()``'s names."""
        own = {name: getattr(self, name) for name in _SERVER_DEFAULTS if name in self.given}
        return {**own, **self.endpoint.given_values()}


@dataclass(frozen=True)
class RayServerOptions(ServerOptions):
    """``ServerOptions`` for ``serve(backend="ray")``: ``host=None`` keeps the address Ray Serve listens on."""

    def _check_host(self) -> None:
        if self.host is not None:
            super()._check_host()


_SERVER_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ServerOptions) if f.name not in ("endpoint", "given")}


def _set_of(arguments: Mapping[str, Any], defaults: Mapping[str, Any]) -> Iterable[str]:
    """The names in ``arguments`` whose value is not their default (a value that cannot be compared, an array, counts as set)."""
    for name, value in arguments.items():
        default = defaults[name]
        try:
            same = value is default or bool(value == default)
        except Exception:  # noqa: BLE001 - a value that does not compare (an array): given on purpose
            same = False
        if not same:
            yield name


def check_option_names(names: Iterable[str], who: str) -> None:
    """Refuse a name that is not a per-endpoint option.

    Raises:
        TypeError: one is not (``who`` got it).
    """
    unknown = sorted(set(names) - set(ENDPOINT_OPTIONS))
    if unknown:
        raise TypeError(
            f"{who} got {', '.join(unknown)}, which is not a per-endpoint option; "
            f"use one of {', '.join(ENDPOINT_OPTIONS)} (host, port, start_timeout, api_key, cors_origins and client_timeout go to serve())"
        )


# -- paths ------------------------------------------------------------------------------------


def check_path(path: Any, label: str, reserved: Sequence[str] = ()) -> None:
    """Check an endpoint's path: it starts with '/', has no empty segment and is none of ``reserved``.

    Raises:
        ValueError: it is not such a path (``label`` names where it came from).
    """
    if not isinstance(path, str) or not path.startswith("/") or path in reserved or "//" in path:
        other = f" other than {', '.join(reserved)}" if reserved else ""
        raise ValueError(f"{label} must be a path starting with '/'{other}, got {path!r}")


def path_of(api: Any, path: str, own: str | None, *, default: str | None = DEFAULT_API_PATH) -> str:
    """Where ``api`` is served: ``path``, unless it is ``default`` (the caller named no path) and
    the API was made with a path of its own (``own``, ``MyAPI(api_path=...)``); ``default=None``:
    the caller always names the path (a dict's key).

    Raises:
        ValueError: the API and the caller name two different paths.
    """
    if own is None or own == path:
        return path
    if path != default:
        raise ValueError(f"{type(api).__name__} was made with api_path={own!r} but is served at {path!r}; give the path in one place")
    return own


def claim_path(taken: set[str], path: str) -> None:
    """Add ``path`` to the paths ``taken`` by a server's endpoints.

    Raises:
        ValueError: another endpoint uses it.
    """
    if path in taken:
        raise ValueError(f"two endpoints use the path {path}; give each its own path")
    taken.add(path)
