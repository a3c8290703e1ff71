"""``GET /metrics``: the server's figures in the Prometheus text exposition format (version 0.0.4).

Written by hand: a few counters, gauges and histograms read from each endpoint's tracker and pool
at scrape time, so nothing is added to the per-request path and no dependency is needed. Every
series carries the endpoint's ``path``.
"""

from __future__ import annotations

import math
from typing import Iterable

from .. import __version__
from ..pool.tracking import TERMINAL_STATES, Histogram
from .endpoints import ServingState

__all__ = ["render_metrics"]

WORKER_STATES = ("starting", "idle", "busy", "dead", "stopped")


def render_metrics(serving: ServingState) -> str:
    """The whole ``/metrics`` page."""
    endpoints = serving.endpoints
    out = _Writer()
    out.family("litkit_info", "gauge", "litkit version (always 1)")
    out.sample("litkit_info", {"version": __version__}, 1)

    out.family("litkit_requests_total", "counter", "requests admitted and finished, by endpoint path and outcome")
    for endpoint in endpoints:
        counts = endpoint.tracker.counts()
        for outcome in TERMINAL_STATES:
            out.sample("litkit_requests_total", {"path": endpoint.path, "outcome": outcome}, counts[outcome])

    out.family("litkit_requests_in_progress", "gauge", "requests admitted and not finished, by state (queued: waiting for a worker)")
    for endpoint in endpoints:
        counts = endpoint.tracker.counts()
        for state in ("queued", "running"):
            out.sample("litkit_requests_in_progress", {"path": endpoint.path, "state": state}, counts[state])

    out.family("litkit_queue_depth", "gauge", "requests waiting for a free worker")
    for endpoint in endpoints:
        out.sample("litkit_queue_depth", {"path": endpoint.path}, endpoint.tracker.counts()["queued"])

    out.family("litkit_request_duration_seconds", "histogram", "arrival to the end of the response, of completed requests")
    for endpoint in endpoints:
        out.histogram("litkit_request_duration_seconds", {"path": endpoint.path}, endpoint.tracker.latency)

    out.family("litkit_time_to_first_chunk_seconds", "histogram", "arrival to the first chunk sent, of streamed responses")
    for endpoint in endpoints:
        out.histogram("litkit_time_to_first_chunk_seconds", {"path": endpoint.path}, endpoint.tracker.first_chunk)

    out.family("litkit_chunks_streamed_total", "counter", "stream chunks sent to clients")
    for endpoint in endpoints:
        out.sample("litkit_chunks_streamed_total", {"path": endpoint.path}, endpoint.tracker.chunks_streamed())

    out.family("litkit_workers", "gauge", "worker processes by state")
    for endpoint in endpoints:
        states = [worker.state for worker in endpoint.pool.workers]
        for state in WORKER_STATES:
            out.sample("litkit_workers", {"path": endpoint.path, "state": state}, states.count(state))

    out.family("litkit_worker_restarts_total", "counter", "times a worker process was replaced")
    for endpoint in endpoints:
        for worker in endpoint.pool.workers:
            out.sample("litkit_worker_restarts_total", {"path": endpoint.path, "worker": str(worker.id)}, worker.restarts)

    out.family("litkit_worker_requests_handled_total", "counter", "requests each worker has finished")
    for endpoint in endpoints:
        for worker in endpoint.pool.workers:
            out.sample("litkit_worker_requests_handled_total", {"path": endpoint.path, "worker": str(worker.id)}, worker.handled)
    return out.text()


class _Writer:
    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self._lines.append(f"# HELP {name} {help_text}")
        self._lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        self._lines.append(f"{name}{_labels(labels.items())} {_number(value)}")

    def histogram(self, name: str, labels: dict[str, str], histogram: Histogram) -> None:
        for bound, count in histogram.cumulative():
            self.sample(name + "_bucket", {**labels, "le": _number(bound)}, count)
        self.sample(name + "_sum", labels, histogram.sum)
        self.sample(name + "_count", labels, histogram.count)

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


def _labels(labels: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in labels)
    return "{" + inner + "}" if inner else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value)) if abs(value) < 2**53 else repr(float(value))
    return repr(float(value))
