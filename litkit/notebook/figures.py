"""The figures the dashboard's charts draw (``litkit.notebook.charts``), as plain data made from
``Server.status()`` snapshots: the throughput and latency series, and the recent streams' bars.
Standard library only, tested without a kernel.
"""

from __future__ import annotations

from collections import deque
from typing import Any

__all__ = ["ChartSeries", "SAMPLE_EVERY_S", "SERIES_POINTS", "stream_bars"]

SAMPLE_EVERY_S = 1.0
SERIES_POINTS = 180  # three minutes at one point a second
MAX_BARS = 12
_OUTCOMES = {"completed": "completed", "failed": "failed", "timed_out": "timed out", "running": "running"}


def stream_bars(recent: list[dict[str, Any]], limit: int = MAX_BARS) -> list[list[Any]]:
    """``[request id, chunks, outcome]`` of the newest ``limit`` streams, oldest first. Outcome:
    running, completed, client left, cancelled, failed or timed out."""
    bars = []
    for entry in recent:
        state = str(entry.get("state"))
        chunks = int(entry.get("chunks") or 0)
        if chunks == 0:
            continue  # not a stream, or one that has sent nothing yet
        if state == "cancelled":
            outcome = "client left" if str(entry.get("error") or "").startswith("client left") else "cancelled"
        else:
            outcome = _OUTCOMES.get(state, state)
        bars.append([str(entry.get("id")), chunks, outcome])
        if len(bars) == limit:
            break
    return bars[::-1]


class ChartSeries:
    """Points ``[seconds since the first, throughput req/s, p50 ms, p95 ms]``, at most one every
    ``SAMPLE_EVERY_S`` and only when the figures moved (an idle server adds none), the last
    ``SERIES_POINTS`` of them."""

    def __init__(self) -> None:
        self._points: deque[list[float | None]] = deque(maxlen=SERIES_POINTS)
        self._first: float | None = None
        self._last = float("-inf")

    def sample(self, now: float, stats: dict[str, Any] | None) -> bool:
        """Take a point from ``stats`` (``status()["stats"]``) if one is due; whether one was taken."""
        if now - self._last < SAMPLE_EVERY_S:
            return False
        self._last = now
        stats = stats or {}
        figures = [float(stats.get("throughput") or 0.0), _ms(stats.get("p50_s")), _ms(stats.get("p95_s"))]
        if self._points and self._points[-1][1:] == figures:
            return False
        if self._first is None:
            self._first = now
        self._points.append([round(now - self._first, 1), *figures])
        return True

    def points(self) -> list[list[float | None]]:
        return list(self._points)


def _ms(seconds: Any) -> float | None:
    return None if seconds is None else round(float(seconds) * 1000, 3)
