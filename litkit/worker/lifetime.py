"""Ending with the process that started this one: the kernel's ``PR_SET_PDEATHSIG`` (Linux).

Used by the workers (their parent is the server's process) and by the server process of
``litkit.server.host.ProcessHost`` (its parent is the caller's process, a notebook kernel).
"""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["die_with_parent"]


def die_with_parent(parent_pid: int | None) -> None:
    """Ask the kernel to SIGKILL this process when its parent ``parent_pid`` dies (Linux).

    A watcher thread cannot run while this process holds the GIL inside C (a catastrophic regex,
    a long native call); the kernel's ``PR_SET_PDEATHSIG`` needs no thread. It fires when the
    *thread* that started this process ends: litkit starts its processes from a thread that
    outlives them. A parent that died before the call is caught by the ``getppid()`` check right
    after it, as torch and vLLM do: this process then exits at once.
    """
    if parent_pid is None or not sys.platform.startswith("linux"):
        return
    import ctypes  # only here: the rest of the process has no use for it

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # no prctl: the caller's other watch (end of file on its socket) alone ends this process
    if os.getppid() != parent_pid:
        os._exit(0)  # the parent is gone already
