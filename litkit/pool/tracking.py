"""Book-keeping of requests: their states, the counts, the recent list, and the last minute's
throughput and latency percentiles, all of which ``status()`` shows.

A ``RequestRecord`` belongs to its request, which is the server's side (``litkit.server.relay``
and its pieces, ``admission`` and ``answers``): only they change it, and only through the
tracker's methods, one per event of a request's life: ``admit`` (its body is in), ``start`` (a
worker has it), ``chunk`` (a chunk went out), ``stream_began`` (the first one did), ``finish``
(a terminal state, with the reason as given). No code outside this module assigns a record's
fields; the pool knows jobs, not records. The rest of the server (``status()``, ``/metrics``,
``litkit.compat``'s listeners, the dashboard through the status snapshot) only reads them.

Only the server's event-loop thread mutates these objects; ``Server.status()`` asks that thread for
a snapshot, so nothing here needs a lock.
"""

from __future__ import annotations

import bisect
import collections
import heapq
import math
import time
from typing import Any, Callable

__all__ = ["RequestRecord", "RequestTracker", "Histogram", "TERMINAL_STATES", "merge_recent", "merge_stats"]

TERMINAL_STATES = ("completed", "failed", "cancelled", "timed_out")
RECENT_LIMIT = 100
STATS_WINDOW_S = 60.0
# Latency samples kept for the percentiles; past it the oldest in the window are dropped first.
# Sorting them runs on the server thread at every status() (5 times a second with the dashboard
# shown), so they are kept few: 1,024 samples place a p95 well enough for a dashboard.
STATS_SAMPLES = 1024
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
    """One admitted request, from arrival to its terminal state; changed only by ``RequestTracker``."""

    __slots__ = ("id", "path", "version", "state", "chunks", "arrived", "first_chunk_at", "finished", "error")

    def __init__(self, request_id: str, path: str, version: int = 1, arrived: float | None = None) -> None:
        """``arrived``: when the request's head came (``time.monotonic()``); now if not given."""
        self.id = request_id
        self.path = path
        self.version = version  # of the server's code that answered it: 1, then one more per re-run
        self.state = "queued"
        self.chunks = 0
        self.arrived = time.monotonic() if arrived is None else arrived
        self.first_chunk_at: float | None = None  # when the first chunk went to the client
        self.finished: float | None = None
        self.error: str | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    def snapshot(self, now: float) -> dict[str, Any]:
        duration = None if self.finished is None else round(self.finished - self.arrived, 6)
        first_chunk = None if self.first_chunk_at is None else round(self.first_chunk_at - self.arrived, 6)
        return {
            "id": self.id,
            "path": self.path,
            "version": self.version,
            "state": self.state,
            "chunks": self.chunks,
            "duration_s": duration,
            "elapsed_s": duration if duration is not None else round(now - self.arrived, 3),
            "first_chunk_s": first_chunk,
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
        self._created = time.monotonic()
        # (finished, duration) of completed requests, oldest first, at most STATS_SAMPLES of them,
        # and [whole second, completions] for the throughput; both trimmed to the stats window.
        self._completions: collections.deque[tuple[float, float]] = collections.deque(maxlen=STATS_SAMPLES)
        self._per_second: collections.deque[list[int]] = collections.deque()
        self._stopped_at: float | None = None
        # Called with ("admitted" | "finished", record) on the server's loop (litkit.compat's
        # on_request/on_response callbacks); each must be quick and must not raise.
        self.listeners: list[Callable[[str, RequestRecord], None]] = []
        # The version of the server's code that takes this endpoint's new requests: a re-run
        # (litkit.server.loop.ServerLoop.replace) hands the tracker on to the next one, so an
        # endpoint keeps one history across versions.
        self.version = 1

    def admit(self, request_id: str, path: str, arrived: float | None = None) -> RequestRecord:
        """Count a new request, queued (``arrived``: when its head came, ``time.monotonic()``; now if not given)."""
        record = RequestRecord(request_id, path, self.version, arrived)
        self._live["queued"] += 1
        self._recent.append(record)
        self._in_flight.add(record)
        for listener in self.listeners:
            listener("admitted", record)
        return record

    def start(self, record: RequestRecord) -> None:
        """A worker has the request: queued to running.

        Raises:
            RuntimeError: the request is not queued (a bug in its handler, not the client's).
        """
        if record.state != "queued":
            raise RuntimeError(f"request {record.id} cannot start from state {record.state!r}")
        self._live["queued"] -= 1
        self._live["running"] += 1
        record.state = "running"

    def chunk(self, record: RequestRecord) -> int:
        """One more chunk of the request's answer went out; the count so far."""
        record.chunks += 1
        return record.chunks

    def stream_began(self, record: RequestRecord) -> None:
        """The stream's headers and first chunk went out now (``first_chunk_at``, once)."""
        if record.first_chunk_at is None:
            record.first_chunk_at = time.monotonic()

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
        if state == "completed":
            self._completions.append((record.finished, record.finished - record.arrived))
            second = int(record.finished)
            if self._per_second and self._per_second[-1][0] == second:
                self._per_second[-1][1] += 1
            else:
                self._per_second.append([second, 1])
        for listener in self.listeners:
            listener("finished", record)
        return True

    def counts(self) -> dict[str, int]:
        return {**self._live, **self._totals}

    def chunks_streamed(self) -> int:
        """Chunks sent to clients so far, streams in progress included."""
        return self._chunks_of_finished + sum(record.chunks for record in self._in_flight)

    def stop_clock(self) -> None:
        """The server stopped: from now on ``recent()`` and ``stats()`` show the figures as they were."""
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()

    def now(self) -> float:
        """``time.monotonic()``, or the moment the server stopped."""
        return self._stopped_at if self._stopped_at is not None else time.monotonic()

    def recent(self) -> list[dict[str, Any]]:
        """Newest first."""
        now = self.now()
        return [record.snapshot(now) for record in reversed(self._recent)]

    def records(self) -> list[RequestRecord]:
        """The recent records, oldest first."""
        return list(self._recent)

    def stats(self) -> dict[str, Any]:
        """Throughput and latency of the requests completed within the last ``STATS_WINDOW_S``.

        ``throughput`` is completions per second over the window (or over the time since the
        tracker started, when that is shorter); ``p50_s`` and ``p95_s`` are arrival-to-finish
        latencies (None before any request completed), from at most ``STATS_SAMPLES`` samples.
        """
        return merge_stats([self])

    def _trim(self, horizon: float) -> None:
        while self._completions and self._completions[0][0] < horizon:
            self._completions.popleft()
        while self._per_second and self._per_second[0][0] < int(horizon):
            self._per_second.popleft()


def merge_recent(trackers: list[RequestTracker]) -> list[dict[str, Any]]:
    """The newest ``RECENT_LIMIT`` requests of several trackers, newest first."""
    if len(trackers) == 1:
        return trackers[0].recent()
    now = min(tracker.now() for tracker in trackers)
    records = heapq.merge(*(tracker.records() for tracker in trackers), key=lambda record: record.arrived)
    return [record.snapshot(now) for record in reversed(list(records)[-RECENT_LIMIT:])]


def merge_stats(trackers: list[RequestTracker]) -> dict[str, Any]:
    """``RequestTracker.stats()`` over the requests of several trackers together."""
    now = min(tracker.now() for tracker in trackers)
    horizon = now - STATS_WINDOW_S
    for tracker in trackers:
        tracker._trim(horizon)
    completed = sum(count for tracker in trackers for _, count in tracker._per_second)
    window = min(STATS_WINDOW_S, max(now - min(tracker._created for tracker in trackers), 1e-3))
    durations = [duration for tracker in trackers for _, duration in tracker._completions]
    durations.sort()
    return {
        "window_s": round(window, 3),
        "completed": completed,
        "throughput": round(completed / window, 3),
        "p50_s": _percentile(durations, 0.50),
        "p95_s": _percentile(durations, 0.95),
    }


def _percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list; None for an empty one."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return round(sorted_values[rank - 1], 6)
