"""Book-keeping of requests: their states, the counts, and the recent list that ``status()`` shows.

Only the server's event-loop thread mutates these objects; ``Server.status()`` asks that thread for
a snapshot, so nothing here needs a lock.
"""

from __future__ import annotations

import collections
import time
from typing import Any

__all__ = ["RequestRecord", "RequestTracker", "TERMINAL_STATES"]

TERMINAL_STATES = ("completed", "failed", "cancelled", "timed_out")
RECENT_LIMIT = 100


class RequestRecord:
    """One admitted request, from arrival to its terminal state."""

    __slots__ = ("id", "path", "state", "chunks", "arrived", "finished", "error")

    def __init__(self, request_id: str, path: str) -> None:
        self.id = request_id
        self.path = path
        self.state = "queued"
        self.chunks = 0
        self.arrived = time.monotonic()
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
    """Counts by state and the newest requests."""

    def __init__(self) -> None:
        self._live: dict[str, int] = {"queued": 0, "running": 0}
        self._totals: dict[str, int] = dict.fromkeys(TERMINAL_STATES, 0)
        self._recent: collections.deque[RequestRecord] = collections.deque(maxlen=RECENT_LIMIT)

    def admit(self, request_id: str, path: str) -> RequestRecord:
        record = RequestRecord(request_id, path)
        self._live["queued"] += 1
        self._recent.append(record)
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
        return True

    def counts(self) -> dict[str, int]:
        return {**self._live, **self._totals}

    def recent(self) -> list[dict[str, Any]]:
        """Newest first."""
        return [record.snapshot() for record in reversed(self._recent)]
