"""Where workers run: ``accelerator``, ``devices`` and ``workers_per_device`` become one placement
per worker.

CUDA GPUs are found without importing torch (or any framework) in the serving process:

1. ``CUDA_VISIBLE_DEVICES`` in the serving process's environment, when it is set: its entries are
   the GPUs litkit may use (empty, or starting with ``-1``: none);
2. else the Linux driver's ``/proc/driver/nvidia/gpus/`` (one folder per GPU);
3. else ``nvidia-smi -L`` (one line per GPU), given a few seconds.

A GPU worker's environment gets ``CUDA_VISIBLE_DEVICES`` set to its one GPU before its interpreter
starts, so inside the worker that GPU is ``cuda:0``, which is what ``setup(device)`` receives.
``devices=[1, 2]`` counts positions among the GPUs found (as ``cuda:1`` would in the serving
process), not physical ids.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, NamedTuple

__all__ = ["Placement", "find_cuda_devices", "plan_workers", "ACCELERATORS"]

ACCELERATORS = ("auto", "cpu", "cuda")
_NVIDIA_PROC = "/proc/driver/nvidia/gpus"
_NVIDIA_SMI_TIMEOUT_S = 5.0


class Placement(NamedTuple):
    """One worker's device.

    Attributes:
        device: what ``setup`` receives, ``"cpu"`` or ``"cuda:0"``.
        visible: ``CUDA_VISIBLE_DEVICES`` for the worker's environment; None leaves it as inherited.
    """

    device: str
    visible: str | None


def find_cuda_devices() -> list[str]:
    """The identifiers of the CUDA GPUs this process may use (indices or UUIDs), in order."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = []
        for entry in visible.split(","):
            entry = entry.strip()
            if not entry or entry.startswith("-"):
                break  # CUDA ignores everything from the first invalid entry on
            entries.append(entry)
        return entries
    try:
        count = len([name for name in os.listdir(_NVIDIA_PROC) if not name.startswith(".")])
    except OSError:
        count = _count_with_nvidia_smi()
    return [str(index) for index in range(count)]


def _count_with_nvidia_smi() -> int:
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=_NVIDIA_SMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return 0
    if listing.returncode != 0:
        return 0
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def plan_workers(accelerator: Any, devices: Any, workers: int, workers_per_device: Any) -> list[Placement]:
    """One placement per worker to start.

    On the CPU there is one device and ``workers`` workers (``workers_per_device`` is the same
    number by another name). On CUDA each chosen GPU gets ``workers_per_device`` workers (default:
    ``workers``), so ``devices=2, workers_per_device=3`` starts 6.

    Raises:
        ValueError: an argument is malformed, CUDA was asked for and no GPU is visible, or
            ``devices`` names more GPUs, or other GPUs, than are visible.
    """
    if accelerator not in ACCELERATORS:
        raise ValueError(f"accelerator must be one of {', '.join(map(repr, ACCELERATORS))}, got {accelerator!r}")
    per_device = _per_device(workers, workers_per_device)
    gpus = find_cuda_devices() if accelerator != "cpu" else []
    if accelerator == "cpu" or (accelerator == "auto" and not gpus and devices is None):
        if devices is not None:
            raise ValueError(f"devices={devices!r} picks CUDA GPUs, but accelerator='cpu'; leave devices out, or pass accelerator='cuda' or 'auto'")
        # An explicit "cpu" hides the GPUs, so a framework in the worker cannot take one by default.
        return [Placement("cpu", "" if accelerator == "cpu" else None)] * per_device
    if not gpus:
        raise ValueError(
            f"accelerator={accelerator!r} with devices={devices!r} asks for CUDA GPUs, but none is visible to this process "
            "(checked CUDA_VISIBLE_DEVICES, /proc/driver/nvidia/gpus and nvidia-smi -L); pass accelerator='cpu', "
            "or check the NVIDIA driver"
        )
    chosen = [gpus[index] for index in _device_indices(devices, len(gpus))]
    return [Placement("cuda:0", gpu) for gpu in chosen for _ in range(per_device)]


def _per_device(workers: int, workers_per_device: Any) -> int:
    if workers_per_device is None:
        return workers
    if isinstance(workers_per_device, bool) or not isinstance(workers_per_device, int) or not 1 <= workers_per_device <= 1024:
        raise ValueError(f"workers_per_device must be an int from 1 to 1024 or None, got {workers_per_device!r}")
    if workers not in (1, workers_per_device):
        raise ValueError(
            f"workers={workers} and workers_per_device={workers_per_device} disagree; pass one of them "
            "(workers_per_device is the number of workers on each device)"
        )
    return workers_per_device


def _device_indices(devices: Any, available: int) -> list[int]:
    """Positions among the visible GPUs: ``None`` is all of them, an int the first N, a list those."""
    if devices is None:
        return list(range(available))
    if isinstance(devices, int) and not isinstance(devices, bool):
        if not 1 <= devices <= available:
            raise ValueError(f"devices={devices} but {available} CUDA GPU{'s' * (available != 1)} are visible; pass a count from 1 to {available}")
        return list(range(devices))
    if isinstance(devices, (list, tuple)) and devices and all(isinstance(d, int) and not isinstance(d, bool) for d in devices):
        missing = [d for d in devices if not 0 <= d < available]
        if missing:
            raise ValueError(
                f"devices={list(devices)} names GPU {missing[0]}, but {available} CUDA GPU{'s' * (available != 1)} are visible "
                f"(indices 0 to {available - 1}); pass indices in that range"
            )
        if len(set(devices)) != len(devices):
            raise ValueError(f"devices={list(devices)} names a GPU twice; use workers_per_device for several workers per GPU")
        return list(devices)
    raise ValueError(f"devices must be None (all GPUs), a count, or a non-empty list of GPU indices, got {devices!r}")
