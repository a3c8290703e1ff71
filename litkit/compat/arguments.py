"""LitServe's ``LitServer`` arguments as ``serve()``'s: devices, workers, body size and CORS middlewares.

Each either becomes the ``serve()`` option that does what LitServe does with it, or raises an
error that names it and says what to use instead (``docs/migrating-from-litserve.md``).
"""

from __future__ import annotations

from typing import Any, Mapping

from ..options import DEFAULT_MAX_BODY_SIZE
from ..pool.devices import find_cuda_devices
from ..server.access import CORS_ALLOW_HEADERS, CORS_ALLOW_METHODS

__all__ = ["accelerator_and_devices", "cors_origins_of", "payload_size", "unsupported", "workers_per_path"]


def unsupported(argument: str, instead: str) -> TypeError:
    return TypeError(f"LitServer({argument}): {instead} (docs/migrating-from-litserve.md)")


_CORS_MIDDLEWARE = "starlette.middleware.cors.CORSMiddleware"  # fastapi.middleware.cors re-exports it
# What litkit's CORS answers allow (litkit.server.access), lower case.
_CORS_METHODS = frozenset(method.strip().lower() for method in CORS_ALLOW_METHODS.split(","))
_CORS_HEADERS = frozenset(header.strip().lower() for header in CORS_ALLOW_HEADERS.split(","))


def cors_origins_of(middlewares: Any) -> tuple[str, ...]:
    """LitServe's ``middlewares``: Starlette's ``CORSMiddleware`` with ``allow_origins`` becomes
    ``serve(cors_origins=...)``; any other middleware is refused (an ASGI app cannot wrap litkit's server).

    Raises:
        ValueError: ``middlewares`` is not a list.
        TypeError: a middleware, or a CORSMiddleware option, litkit cannot honour.
    """
    if middlewares is None:
        return ()
    if not isinstance(middlewares, list):
        raise ValueError("middlewares must be a list of middlewares or (middleware, options) tuples, e.g. [(CORSMiddleware, {'allow_origins': ['*']})]")
    origins: list[str] = []
    for item in middlewares:
        middleware, options = item if isinstance(item, tuple) else (item, {})
        name = f"{getattr(middleware, '__module__', '')}.{getattr(middleware, '__qualname__', type(middleware).__name__)}"
        if name != _CORS_MIDDLEWARE:
            raise unsupported(
                f"middlewares=[{getattr(middleware, '__name__', name)}]",
                "litkit serves with Tornado, so ASGI middlewares cannot wrap it; only Starlette's CORSMiddleware "
                "(allow_origins=...) is taken, as cors_origins. Request ids (X-Request-ID), the body limit "
                "(max_payload_size) and the API key are built in",
            )
        other = sorted(set(options) - {"allow_origins", "allow_methods", "allow_headers"})
        if other:
            raise unsupported(
                f"middlewares=[(CORSMiddleware, {{{', '.join(map(repr, other))}: ...}})]",
                "litkit takes allow_origins (and allow_methods, allow_headers within what it allows); leave the rest out",
            )
        for option, allowed in (("allow_methods", _CORS_METHODS), ("allow_headers", _CORS_HEADERS)):
            beyond = [value for value in options.get(option, ()) if str(value).lower() not in allowed]
            if beyond:
                raise unsupported(
                    f"middlewares=[(CORSMiddleware, {{{option!r}: {beyond!r}}})]",
                    f"litkit allows the {option.split('_')[1]} {', '.join(sorted(allowed))} to browser pages of allowed origins, "
                    f"and no others; leave {option} out",
                )
        origins.extend(options.get("allow_origins", ()))
    return tuple(origins)


def accelerator_and_devices(accelerator: Any, devices: Any) -> tuple[str, Any]:
    """LitServe's ``accelerator`` and ``devices`` as ``serve()``'s.

    LitServe runs the CPU as one device (``devices`` counts GPUs), so on the CPU ``devices`` may be
    ``"auto"`` or 1; ``workers_per_device`` sets how many workers it gets.
    """
    if accelerator == "mps":
        raise unsupported("accelerator='mps'", "litkit serves on 'cpu' or 'cuda'; pass accelerator='cpu'")
    if accelerator not in ("auto", "cpu", "cuda", "gpu"):
        raise ValueError(f"accelerator must be 'auto', 'cpu', 'cuda' or 'gpu', got {accelerator!r}")
    accelerator = "cuda" if accelerator == "gpu" else accelerator
    if devices != "auto" and (isinstance(devices, bool) or not isinstance(devices, int) or devices < 1):
        raise ValueError(f"devices must be 'auto' or a number of devices of at least 1, got {devices!r}")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not find_cuda_devices())
    if on_cpu:
        if devices not in ("auto", 1):
            raise ValueError(f"devices={devices!r} on the CPU: LitServe and litkit run the CPU as one device; leave devices out and set workers_per_device")
        return accelerator, None
    return accelerator, None if devices == "auto" else devices


def workers_per_path(workers_per_device: Any, paths: list[str]) -> dict[str, int]:
    """LitServe's ``workers_per_device``: one int for every API, a list in the APIs' order, or a dict by path."""
    if isinstance(workers_per_device, Mapping):
        unknown = sorted(set(workers_per_device) - set(paths))
        if unknown:
            raise ValueError(f"workers_per_device names {', '.join(unknown)}, which no API serves; the paths are {', '.join(paths)}")
        values = [workers_per_device.get(path, 1) for path in paths]
    elif isinstance(workers_per_device, (list, tuple)):
        if len(workers_per_device) != len(paths):
            raise ValueError(f"workers_per_device has {len(workers_per_device)} entries for {len(paths)} APIs; give one per API")
        values = list(workers_per_device)
    else:
        values = [workers_per_device] * len(paths)
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"workers_per_device must be an int of at least 1 (or a list or dict of them), got {value!r}")
    return dict(zip(paths, values))


def payload_size(max_payload_size: Any) -> int:
    """LitServe's ``max_payload_size`` (bytes, or a string such as ``"10MB"``) as ``serve(max_body_size=...)``."""
    if max_payload_size is None:
        return DEFAULT_MAX_BODY_SIZE
    if isinstance(max_payload_size, str):
        text = max_payload_size.strip().upper()
        for suffix, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024), ("B", 1)):
            if text.endswith(suffix) and text[: -len(suffix)].strip().isdigit():
                return int(text[: -len(suffix)]) * factor
        raise ValueError(f"max_payload_size must be a number of bytes or a size such as '10MB', got {max_payload_size!r}")
    if isinstance(max_payload_size, float) and max_payload_size.is_integer():
        max_payload_size = int(max_payload_size)  # LitServe compares the body size to it: 52428800.0 works there
    if isinstance(max_payload_size, bool) or not isinstance(max_payload_size, int) or max_payload_size < 1:
        raise ValueError(f"max_payload_size must be a whole number of bytes or a size such as '10MB', got {max_payload_size!r}")
    return max_payload_size
