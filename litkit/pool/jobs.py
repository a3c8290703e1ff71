"""A request on its way through the worker pool (``Job``), the worker that takes it
(``WorkerProcess``, the pool's handle on one worker), and why a request cannot be queued or run.

A job knows its worker and a worker its jobs, so the two live here together; starting and reaping
the worker's interpreter is ``litkit.pool.processes``'.

Server side, on the event-loop thread only.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
from typing import Any

from ..errors import LitkitError
from .channels import ControlChannel, PipeReader
from .devices import Placement
from .processes import ExitWatch

__all__ = ["Job", "JobDropped", "NoWorkers", "QueueFull", "WorkerProcess", "fail", "succeed"]


class QueueFull(LitkitError):
    """The queue holds ``max_queue`` requests already."""


class JobDropped(LitkitError):
    """A queued job was cancelled before any worker took it."""


class NoWorkers(LitkitError):
    """Every worker is down for good (each failed to start MAX_START_ATTEMPTS times in a row)."""


class Job:
    """One request on its way through the pool.

    A job is queued in the server, then handed to a worker (``worker`` set; ``read_fd`` holds the
    read end of its response pipe), then started: the worker has reached it, and ``assigned``
    resolves to ``pipe``, the read end as a stream. The pipe is the job's, and so the pool's: the
    request's handler reads it, and tells the pool when it is done with the job
    (``WorkerPool.release``, or ``WorkerPool.cancel`` to stop it); only pool code closes it
    (``close_pipe``). Closing the read end is how a handed-over or running request is cancelled.

    A job knows its request by id and key only; the request's record (``litkit.pool.tracking``)
    is its handler's.
    """

    def __init__(self, request_id: str, body: bytes, key: str | None = None) -> None:
        """``key`` names the job on the wire (``REQUEST``, ``DONE``): unique in this process, unlike
        ``request_id``, which may be the client's ``X-Request-ID`` and is only echoed back. Without
        it the key is the request's id, which the caller then vouches is unique."""
        self.id = request_id
        self.body = body
        self.key = key if key is not None else request_id
        self.assigned: asyncio.Future[PipeReader] = asyncio.get_running_loop().create_future()
        self.read_fd: int | None = None
        self.pipe: PipeReader | None = None
        self.worker: WorkerProcess | None = None
        self.dropped = False
        self.queued_at = 0.0  # loop time of submit(), read by batching
        self.grace_timer: asyncio.TimerHandle | None = None  # armed when a started job is cancelled

    @property
    def started(self) -> bool:
        return self.pipe is not None

    def ended(self) -> None:
        """The worker is done with this job: disarm its ``cancel_grace`` timer, which holds the job."""
        if self.grace_timer is not None:
            self.grace_timer.cancel()
            self.grace_timer = None

    def close_pipe(self) -> None:
        """Close the server's end of the response pipe, if open; the pool's to call
        (``litkit.pool.pool``), never the request handler's."""
        if self.pipe is not None:
            if not self.pipe.closed():
                self.pipe.close()
        elif self.read_fd is not None:
            os.close(self.read_fd)
            self.read_fd = None


class WorkerProcess:
    """The server's handle on one worker process."""

    def __init__(self, worker_id: int, placement: Placement) -> None:
        self.id = worker_id
        self.placement = placement
        self.state = "starting"
        self.restarts = 0
        self.handled = 0
        self.failed_starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.control: ControlChannel | None = None
        self.exit_watch: ExitWatch | None = None  # tells the pool when ``process`` exits
        self.jobs: collections.deque[Job] = collections.deque()  # handed over, in order; the first runs
        self.ready: asyncio.Future[None] | None = None
        self.last_error = ""
        self.given_up = False  # failed to start MAX_START_ATTEMPTS times in a row: left down
        self.killed = 0  # times killed because a cancelled request did not stop within cancel_grace

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id, "pid": self.pid, "state": self.state, "restarts": self.restarts, "handled": self.handled,
            "device": self.placement.device, "killed": self.killed,
        }


def succeed(future: asyncio.Future[None] | None) -> None:
    """Resolve ``future`` (a worker's READY), unless there is none or it is done already."""
    if future is not None and not future.done():
        future.set_result(None)


def fail(future: asyncio.Future[Any] | None, error: BaseException) -> None:
    """Fail ``future`` (a job's ``assigned``, a worker's READY) with ``error``, unless there is none or it is done."""
    if future is not None and not future.done():
        future.set_exception(error)
        future.exception()  # mark retrieved: nobody may be waiting, and that is fine
