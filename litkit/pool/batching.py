"""Batching (``max_batch_size`` above 1): which queued jobs an idle worker gets as one group, and when.

A group goes as soon as it is full, else once the oldest queued job has waited ``batch_timeout``
seconds; a timer wakes the pool at that moment. On the server's event-loop thread only.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Callable

from .jobs import Job

__all__ = ["Batcher"]


class Batcher:
    """Takes groups of up to ``max_batch_size`` live jobs off the pool's queue."""

    def __init__(self, max_batch_size: int, batch_timeout: float, wake: Callable[[], None]) -> None:
        """``wake``: called on the loop when a partial group's wait is over (the pool dispatches)."""
        self.max_batch_size = max_batch_size
        self.batch_timeout = batch_timeout
        self._wake = wake
        self._timer: asyncio.TimerHandle | None = None

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
