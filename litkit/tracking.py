"""Book-keeping of requests: their states, the counts, and the recent list that ``status()`` shows.

Only the server's event-loop thread mutates these objects; ``Server.status()`` asks that thread for
a snapshot, so nothing here needs a lock.
"""

from __future__ import annotations

import bisect
import collections
import heapq
import math
import time
from typing import Any

__all__ = ["RequestRecord", "RequestTracker", "Histogram", "TERMINAL_STATES", "merge_recent"]

TERMINAL_STATES = ("completed", "failed", "cancelled", "timed_out")
RECENT_LIMIT = 100
# Upper bounds in seconds of the latency histograms (Prometheus style: each counts values <= bound).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class Histogram:
    """Counts of observed values per bucket, their sum and count; cumulative like Prometheus's."""

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, count of values <= it) for each bound, then (inf, count)."""
        total, buckets = 0, []
        for bound, count in zip((*self.bounds, math.inf), self.counts):
            total += count
            buckets.append((bound, total))
        return buckets


class RequestRecord:
    """One admitted request, from arrival to its terminal state."""

    __slots__ = ("id", "path", "state", "chunks", "arrived", "first_chunk_at", "finished", "error")

    def __init__(self, request_id: str, path: str) -> None:
        self.id = request_id
        self.path = path
        self.state = "queued"
        self.chunks = 0
        self.arrived = time.monotonic()
        self.first_chunk_at: float | None = None  # when the first chunk went to the client
        self.finished: float | None = None
        self.error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    def snapshot(self) -> dict[str, Any]:
        duration = None if self.finished is None else round(self.finished - self.arrived, 6)
        return {
            "id": self.id,
            "path": self.path,
            "state": self.state,
            "chunks": self.chunks,
            "duration_s": duration,
            "error": self.error,
        }


class RequestTracker:
    """Counts by state, the newest requests, and the figures ``/metrics`` reports.

    Attributes:
        latency: arrival to the end of the response, of completed requests.
        first_chunk: arrival to the first chunk sent, of streamed responses that sent one.
    """

    def __init__(self) -> None:
        self._live: dict[str, int] = {"queued": 0, "running": 0}
        self._totals: dict[str, int] = dict.fromkeys(TERMINAL_STATES, 0)
        self._recent: collections.deque[RequestRecord] = collections.deque(maxlen=RECENT_LIMIT)
        self._in_flight: set[RequestRecord] = set()
        self._chunks_of_finished = 0
        self.latency = Histogram()
        self.first_chunk = Histogram()

    def admit(self, request_id: str, path: str) -> RequestRecord:
        record = RequestRecord(request_id, path)
        self._live["queued"] += 1
        self._recent.append(record)
        self._in_flight.add(record)
        return record

    def start(self, record: RequestRecord) -> None:
        if record.state != "queued":
            raise RuntimeError(f"request {record.id} cannot start from state {record.state!r}")
        self._live["queued"] -= 1
        self._live["running"] += 1
        record.state = "running"

    def finish(self, record: RequestRecord, state: str, error: str | None = None) -> bool:
        """Move a request to a terminal state; False (and no change) if it already has one."""
        if state not in TERMINAL_STATES:
            raise ValueError(f"{state!r} is not a terminal state; use one of {TERMINAL_STATES}")
        if record.done:
            return False
        self._live[record.state] -= 1
        self._totals[state] += 1
        record.state = state
        record.error = error
        record.finished = time.monotonic()
        self._in_flight.discard(record)
        self._chunks_of_finished += record.chunks
        if state == "completed":
            self.latency.observe(record.finished - record.arrived)
        if record.chunks and record.first_chunk_at is not None:
            self.first_chunk.observe(record.first_chunk_at - record.arrived)
        return True

    def counts(self) -> dict[str, int]:
        return {**self._live, **self._totals}

    def chunks_streamed(self) -> int:
        """Chunks sent to clients so far, streams in progress included."""
        return self._chunks_of_finished + sum(record.chunks for record in self._in_flight)

    def recent(self) -> list[dict[str, Any]]:
        """Newest first."""
        return [record.snapshot() for record in reversed(self._recent)]

    def records(self) -> list[RequestRecord]:
        """The recent records, oldest first."""
        return list(self._recent)


def merge_recent(trackers: list[RequestTracker]) -> list[dict[str, Any]]:
    """The newest ``RECENT_LIMIT`` requests of several trackers, newest first."""
    if len(trackers) == 1:
        return trackers[0].recent()
    records = heapq.merge(*(tracker.records() for tracker in trackers), key=lambda record: record.arrived)
    return [record.snapshot() for record in reversed(list(records)[-RECENT_LIMIT:])]
