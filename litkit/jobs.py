"""A request on its way through the worker pool (``Job``), and why one cannot be queued or run.

Server side, on the event-loop thread only.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

from .channels import PipeReader
from .errors import LitkitError
from .tracking import RequestRecord

if TYPE_CHECKING:
    from .processes import WorkerProcess

__all__ = ["Job", "JobDropped", "NoWorkers", "QueueFull"]


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
    resolves to ``pipe``, the read end as a stream, owned by the job. Closing the read end is how a
    handed-over or running request is cancelled.
    """

    def __init__(self, record: RequestRecord, body: bytes) -> None:
        self.record = record
        self.body = body
        self.assigned: asyncio.Future[PipeReader] = asyncio.get_running_loop().create_future()
        self.read_fd: int | None = None
        self.pipe: PipeReader | None = None
        self.worker: WorkerProcess | None = None
        self.dropped = False
        self.queued_at = 0.0  # loop time of submit(), read by batching
        self.grace_timer: asyncio.TimerHandle | None = None  # armed when a started job is cancelled

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def started(self) -> bool:
        return self.pipe is not None

    def ended(self) -> None:
        """The worker is done with this job: disarm its ``cancel_grace`` timer, which holds the job."""
        if self.grace_timer is not None:
            self.grace_timer.cancel()
            self.grace_timer = None

    def close_pipe(self) -> None:
        if self.pipe is not None:
            if not self.pipe.closed():
                self.pipe.close()
        elif self.read_fd is not None:
            os.close(self.read_fd)
            self.read_fd = None
