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
from typing import Callable

from ..errors import WorkerStartError
from .devices import Placement

__all__ = ["KILL_GRACE_S", "STOP_GRACE_S", "ExitWatch", "describe_exit", "has_exited", "launch", "reap"]

logger = logging.getLogger("litkit.pool")

# After the control socket closes, how long a worker may take to exit before SIGTERM, then SIGKILL.
STOP_GRACE_S = 2.0
KILL_GRACE_S = 1.0
# Without pidfds (not Linux 5.3+), how often ExitWatch asks whether the process is still there.
_EXIT_POLL_S = 0.25


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
    command = [
        sys.executable, "-m", "litkit.worker",
        "--control-fd", str(worker_end.fileno()), "--worker-id", str(worker_id), "--server-pid", str(os.getpid()),
    ]
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


class ExitWatch:
    """Calls ``on_exit`` on the loop once ``process`` has exited, however its channels fare.

    The control socket's end of file is not enough: a process the worker forked (a hook's
    ``os.fork()``, a ``multiprocessing.Process`` of ``setup()``) may hold a copy of it open. So the
    process itself is watched: its pidfd (readable once it exits), or a poll every 0.25 s where
    there is none. The process is not reaped here; ``reap`` does that.
    """

    def __init__(self, process: subprocess.Popen[bytes], on_exit: Callable[[], None]) -> None:
        self._process = process
        self._on_exit = on_exit
        self._loop = asyncio.get_running_loop()
        self._pidfd: int | None = None
        self._timer: asyncio.TimerHandle | None = None
        try:
            # The process is not reaped before this watch ends, so its pid is still its own.
            self._pidfd = os.pidfd_open(process.pid)  # type: ignore[attr-defined,unused-ignore]
        except (AttributeError, OSError):
            self._timer = self._loop.call_later(_EXIT_POLL_S, self._poll)
        else:
            self._loop.add_reader(self._pidfd, self._exited)

    def _poll(self) -> None:
        self._timer = None
        if has_exited(self._process):
            self._exited()
        else:
            self._timer = self._loop.call_later(_EXIT_POLL_S, self._poll)

    def _exited(self) -> None:
        self.close()
        self._on_exit()

    def close(self) -> None:
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def has_exited(process: subprocess.Popen[bytes]) -> bool:
    """True once the process has exited, without reaping it (its pid stays reserved)."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return process.poll() is not None


def _end_session(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL what is left of the exited worker's session: the processes it forked or started.

    The worker leads its own session and process group (``launch``), whose id is its pid. Called
    while the worker is a zombie, not yet reaped, so that id cannot belong to anything else yet.
    A descendant that made a session of its own (a daemon) is out of reach.
    """
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left in the group (the zombie itself ignores signals)


async def reap(process: subprocess.Popen[bytes] | None) -> int | None:
    """Wait for a process to exit; SIGTERM it after STOP_GRACE_S and SIGKILL after KILL_GRACE_S
    more. Once it has exited, SIGKILL what it left in its process group, then reap it."""
    if process is None:
        return None
    for grace, escalate in ((STOP_GRACE_S, process.terminate), (KILL_GRACE_S, process.kill), (KILL_GRACE_S, None)):
        deadline = time.monotonic() + grace
        while not has_exited(process) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if has_exited(process):
            if process.returncode is None:
                _end_session(process)
            return process.wait()
        if escalate is not None:
            escalate()
    logger.error("worker process %d did not exit after SIGKILL", process.pid)
    return None
