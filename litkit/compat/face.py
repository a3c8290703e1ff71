"""What a ``LitServer`` answers at LitServe's own paths (``litkit.server.litserve_routes``): the
health check's and the info's paths, and the info's JSON, built here from LitServer's arguments as
LitServe 0.2.19 reports them."""

from __future__ import annotations

from typing import Any

from ..pool.devices import find_cuda_devices

__all__ = ["check_route_path", "server_face"]


def check_route_path(name: str, path: Any, api_paths: list[str]) -> str:
    """``healthcheck_path`` or ``info_path``, checked.

    Raises:
        ValueError: it does not start with '/', or an API is served there.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"{name} must start with '/'. Please provide a valid path like '/health', '/info' or '/v1/{name.split('_')[0]}', got {path!r}")
    if path in api_paths:
        raise ValueError(f"{name}={path!r} is also an API's path; give one of them another path")
    return path


def server_face(
    healthcheck_path: str,
    info_path: str,
    model_metadata: Any,
    accelerator: str,
    devices: int | None,
    workers_per_device: Any,
    timeout: Any,
    streams: dict[str, bool],
    max_payload_size: Any,
    track_requests: bool,
) -> dict[str, Any]:
    """The face that ``litkit.contract.conventions.following_litserve`` carries to the server."""
    return {
        "healthcheck_path": healthcheck_path,
        "info_path": info_path,
        "info": {
            "model": model_metadata,
            "server": {
                "devices": _device_names(accelerator, devices),
                "workers_per_device": workers_per_device,
                "timeout": timeout,
                "stream": streams,
                "max_payload_size": max_payload_size,
                "track_requests": track_requests,
            },
        },
    }


def _device_names(accelerator: str, devices: int | None) -> list[str]:
    """LitServe's device list: ``["cpu"]``, or ``["cuda:0", ...]`` for the GPUs used."""
    gpus = find_cuda_devices() if accelerator in ("auto", "cuda") else []
    if not gpus:
        return ["cpu"]
    count = len(gpus) if devices is None else devices
    return [f"cuda:{index}" for index in range(count)]
