"""A worker's interpreter as an operating-system process: starting it (a fresh interpreter running
``python -m litkit.worker``), describing how it ended, and reaping it.

Server side; what a worker is doing (its jobs, its control channel) is ``litkit.pool.jobs``'s
``WorkerProcess``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from ..errors import WorkerStartError
from .devices import Placement

__all__ = ["KILL_GRACE_S", "STOP_GRACE_S", "describe_exit", "launch", "reap"]

logger = logging.getLogger("litkit.pool")

# After the control socket closes, how long a worker may take to exit before SIGTERM, then SIGKILL.
STOP_GRACE_S = 2.0
KILL_GRACE_S = 1.0


def launch(worker_id: int, placement: Placement) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """Start worker ``worker_id``'s interpreter on ``placement``; return the process and the
    server's end of its control socket. Its stdout and stderr are pipes, for the caller to read.

    Raises:
        WorkerStartError: the interpreter could not be started.
    """
    if not sys.executable:
        raise WorkerStartError(worker_id, "sys.executable is empty, so litkit cannot start a Python worker")
    server_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if placement.visible is not None:  # set before the interpreter starts, as CUDA needs
        env["CUDA_VISIBLE_DEVICES"] = placement.visible
    command = [sys.executable, "-m", "litkit.worker", "--control-fd", str(worker_end.fileno()), "--worker-id", str(worker_id)]
    try:
        process = subprocess.Popen(
            command,
            pass_fds=[worker_end.fileno()],
            stdin=subprocess.DEVNULL,
            # What user code prints is read back here, line by line, into the log.
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            # Own session: Ctrl+C in a terminal or a kernel interrupt reaches the server only,
            # which then stops its workers in order.
            start_new_session=True,
        )
    except OSError as error:
        server_end.close()
        raise WorkerStartError(worker_id, f"could not start {sys.executable}: {error}") from error
    finally:
        worker_end.close()
    return process, server_end


def describe_exit(code: int | None) -> str:
    """How a worker process ended, for logs and errors: "exited with code 1", "was killed by SIGKILL"."""
    if code is None:
        return "stopped answering"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


async def reap(process: subprocess.Popen[bytes] | None) -> int | None:
    """Wait for a process to exit; SIGTERM it after STOP_GRACE_S and SIGKILL after KILL_GRACE_S more."""
    if process is None:
        return None
    for grace, escalate in ((STOP_GRACE_S, process.terminate), (KILL_GRACE_S, process.kill), (KILL_GRACE_S, None)):
        deadline = time.monotonic() + grace
        while process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if process.returncode is not None:
            return process.returncode
        if escalate is not None:
            escalate()
    logger.error("worker process %d did not exit after SIGKILL", process.pid)
    return None
