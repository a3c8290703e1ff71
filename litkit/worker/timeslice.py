"""Longer scheduler time slices for the server thread and for a worker while it streams, so the
client reading a stream (and any other task that wakes) preempts them instead of waiting.

Linux's EEVDF scheduler (6.6 and later) lets a running task finish its time slice before a task
that wakes with the same slice gets the CPU. On a small machine that is felt: while a worker
yields tokens flat out and the server thread relays them, both cores are busy, and the client
that should read the first token (a notebook cell, a script, a browser) waits up to a whole
slice, 1.4 ms on 2 cores and up to 3 ms on larger machines, each time it wakes. A task with a
*shorter* slice than the running one preempts it at once (Linux 6.12 and later let a task choose
its slice with ``sched_setattr``).

So the server thread, and a worker while it streams, run with a slice longer than the kernel's
default (``SLICE_MS``). The cost: a task with a longer slice that wakes up waits its turn more
often. So the workers start with the kernel's slice (the server thread's is not inherited), and
a worker takes its own back when a stream ends, before it waits for the next request.
``LITKIT_SLICE_MS`` sets another length; ``0`` keeps the kernel's. On other systems, older
kernels and real-time policies this does nothing. Worker side: standard library only.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import sys
from typing import Mapping

logger = logging.getLogger(__name__)

SLICE_MS = 4.0  # longer than any default slice: 0.7 ms x (1 + log2(CPUs, at most 8)) = 2.8 ms at most
_MIN_MS, _MAX_MS = 0.1, 100.0  # the range the kernel accepts

# sched_setattr and sched_getattr, by machine (Linux's syscall tables).
_SYSCALLS = {
    "x86_64": (314, 315),
    "aarch64": (274, 275),
    "riscv64": (274, 275),
    "ppc64le": (355, 356),
    "s390x": (345, 346),
}
_SCHED_OTHER = 0
_RESET_ON_FORK = 0x01  # SCHED_FLAG_RESET_ON_FORK


class _SchedAttr(ctypes.Structure):
    # struct sched_attr, SCHED_ATTR_SIZE_VER0 (48 bytes)
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),  # for SCHED_OTHER: the time slice, in ns (Linux 6.12+)
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
    ]


def slice_ms_from_environment(environ: Mapping[str, str] | None = None) -> float:
    """The slice to use, in ms: ``LITKIT_SLICE_MS`` if set, else ``SLICE_MS``; 0 means "leave it".

    Raises:
        ValueError: ``LITKIT_SLICE_MS`` is not a number, or not 0 and outside 0.1-100 ms.
    """
    text = (os.environ if environ is None else environ).get("LITKIT_SLICE_MS", "").strip()
    if not text:
        return SLICE_MS
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"LITKIT_SLICE_MS={text!r} is not a number; give milliseconds, e.g. 4, or 0 to keep the kernel's slice") from None
    if value != 0 and not _MIN_MS <= value <= _MAX_MS:
        raise ValueError(
            f"LITKIT_SLICE_MS={text!r} is outside the {_MIN_MS:g}-{_MAX_MS:g} ms that Linux accepts; "
            "give a value in that range, or 0 to keep the kernel's slice"
        )
    return value


def current_slice_ms(thread_id: int = 0) -> float | None:
    """A thread's time slice in ms (``thread_id``: a native thread id or pid; 0, the calling
    thread); None where the system does not tell it (not Linux 6.12+)."""
    attr = _get_attr(thread_id)
    return None if attr is None or not attr.sched_runtime else attr.sched_runtime / 1e6


def lengthen_slice(slice_ms: float) -> bool:
    """Give the calling thread a time slice of ``slice_ms`` if that is longer than its own, kept
    from the threads and processes it starts (they begin with the kernel's); whether it has one."""
    own = current_slice_ms()
    if not slice_ms or own is None:
        return False
    return own >= slice_ms or set_slice_ms(slice_ms, inherited=False)


def set_slice_ms(slice_ms: float, inherited: bool = True) -> bool:
    """Set the calling thread's time slice to ``slice_ms``; whether it was set. Never raises.

    ``inherited=False``: the threads and processes it starts get the kernel's default slice
    (``SCHED_FLAG_RESET_ON_FORK``), not this one.
    """
    attr = _get_attr()
    if attr is None or attr.sched_policy != _SCHED_OTHER or not attr.sched_runtime:
        return False  # not Linux, another policy, or a kernel before 6.12 (no slice to read)
    attr.size = ctypes.sizeof(_SchedAttr)
    attr.sched_flags = 0 if inherited else _RESET_ON_FORK
    attr.sched_runtime = int(slice_ms * 1e6)
    numbers = _syscall_numbers()
    if numbers is None or _libc().syscall(numbers[0], 0, ctypes.byref(attr), 0) != 0:
        logger.debug("sched_setattr(slice=%s ms) failed: %s", slice_ms, os.strerror(ctypes.get_errno()))
        return False
    return True


class StreamSlice:
    """``with stream_slice:`` runs a stream with the longer slice, then restores the thread's own."""

    def __init__(self, slice_ms: float, own_ms: float) -> None:
        self.slice_ms = slice_ms
        self.own_ms = own_ms

    @classmethod
    def for_this_thread(cls, environ: Mapping[str, str] | None = None) -> StreamSlice | None:
        """The slice to stream with (``LITKIT_SLICE_MS``, else ``SLICE_MS``); None where it is off,
        cannot be set, or would not be longer than the thread's own."""
        try:
            wanted = slice_ms_from_environment(environ)
        except ValueError:
            return None  # serve() reported it; a worker restarted after the variable changed runs on
        own = current_slice_ms()
        if not wanted or own is None or own >= wanted:
            return None
        return cls(wanted, own)

    def __enter__(self) -> None:
        set_slice_ms(self.slice_ms)

    def __exit__(self, *exc_info: object) -> None:
        set_slice_ms(self.own_ms)


def _get_attr(thread_id: int = 0) -> _SchedAttr | None:
    numbers = _syscall_numbers()
    if numbers is None:
        return None
    attr = _SchedAttr()
    if _libc().syscall(numbers[1], thread_id, ctypes.byref(attr), ctypes.sizeof(attr), 0) != 0:
        return None
    return attr


# Looked up once: a worker sets its slice twice per stream, and dlopen and uname cost 20-50 us each.
@functools.lru_cache(maxsize=None)
def _syscall_numbers() -> tuple[int, int] | None:
    """(sched_setattr, sched_getattr) on this machine; None off Linux or on an unknown machine."""
    return _SYSCALLS.get(platform.machine()) if sys.platform.startswith("linux") else None


@functools.lru_cache(maxsize=None)
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)
