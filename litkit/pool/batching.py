"""Batching (``max_batch_size`` above 1): which queued jobs an idle worker gets as one group, and
when; and which running batch a job joins.

A group goes as soon as it is full, else once the oldest queued job has waited ``batch_timeout``
seconds; a timer wakes the pool at that moment. When no worker is idle, a queued job joins, at
once, the running batch of a worker whose API takes joiners (its READY said so: ``LitAPI.joinable``)
and that has room: fewer than ``max_batch_size`` of its requests still going (the worker sends
``LEFT`` as each leaves), and fewer than ``JOINED_LIMIT`` times that many handed to it since the
batch began (``predict``'s list keeps the finished ones, so a batch that never ends would grow it
for ever; past the limit the batch runs to its end, and the next requests start the next batch).
On the server's event-loop thread only.
"""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Callable

from ..wire.protocol import Kind
from .jobs import Job, WorkerProcess

__all__ = ["Batcher", "JOINED_LIMIT"]

# A joinable batch takes requests until it has been handed this many times max_batch_size in all.
JOINED_LIMIT = 4


class Batcher:
    """Takes groups of up to ``max_batch_size`` live jobs off the pool's queue."""

    def __init__(self, max_batch_size: int, batch_timeout: float, wake: Callable[[], None]) -> None:
        """``wake``: called on the loop when a partial group's wait is over (the pool dispatches)."""
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self._wake = wake
        self._timer: asyncio.TimerHandle | None = None
        self._joinable: set[int] = set()  # the ids of the workers whose batches take joiners
        self._left: dict[int, set[str]] = {}  # per worker id: the keys of its batch's jobs that left it

    def heard(self, worker: WorkerProcess, kind: Kind, payload: bytes) -> None:
        """``worker``'s READY (whether its batches take joiners) or LEFT (a job of its batch left it)."""
        if kind == Kind.LEFT:
            self._left.setdefault(worker.id, set()).add(payload.decode())
            return
        self._left.pop(worker.id, None)  # a fresh process
        if json.loads(payload).get("joinable", False):
            self._joinable.add(worker.id)
        else:
            self._joinable.discard(worker.id)

    def ended(self, worker: WorkerProcess, done: bytes) -> list[Job]:
        """``worker``'s batch ended: its DONE frame, ``done``, names every job the batch ran, one per
        line. Those leave ``worker.jobs`` and are returned; a job sent to join the batch as it ended
        stays: the worker runs it next."""
        keys = set(done.decode().split("\n"))
        ended = [job for job in worker.jobs if job.key in keys]
        worker.jobs = collections.deque(job for job in worker.jobs if job.key not in keys)
        self._left.get(worker.id, set()).difference_update(keys)
        return ended

    def batch_with_room(self, workers: list[WorkerProcess], queue: collections.deque[Job]) -> WorkerProcess | None:
        """The busy worker whose running batch takes ``queue``'s first live job now (the dropped
        ones before it are taken off), the one with the fewest requests going; None: none has room."""
        while queue[0].dropped:
            queue.popleft()
        best, fewest = None, self.max_batch_size
        for worker in workers:
            control = worker.control
            if worker.id not in self._joinable or worker.state != "busy" or control is None or control.writing:
                continue
            if len(worker.jobs) >= JOINED_LIMIT * self.max_batch_size:
                continue
            left = self._left.get(worker.id, set())
            going = sum(1 for job in worker.jobs if job.key not in left)
            if going < fewest:
                best, fewest = worker, going
        return best

    def next_group(self, queue: collections.deque[Job], live: int) -> list[Job] | None:
        """The next group, taken off ``queue`` (``live``: its jobs not dropped, at least one); None:
        not yet, the timer is armed for the oldest job's deadline."""
        loop = asyncio.get_running_loop()
        while queue[0].dropped:
            queue.popleft()
        deadline = queue[0].queued_at + self.batch_timeout
        if live < self.max_batch_size and loop.time() < deadline:
            if self._timer is None:
                self._timer = loop.call_at(deadline, self._on_timer)
            return None
        group: list[Job] = []
        while queue and len(group) < self.max_batch_size:
            job = queue.popleft()
            if not job.dropped:
                group.append(job)
        return group

    def close(self) -> None:
        """Disarm the timer (the pool is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        self._wake()
