"""What every benchmark app shares: its command line and the event side channel (stdlib only).

Each app (litkit, LitServe, FastAPI, raw Tornado) serves one of two workloads on ``/predict``:

- ``echo``: a JSON body ``{"input": 1}`` in, ``{"output": 1}`` out;
- ``tokens``: a stream of NDJSON lines ``{"output": i}``, one per token, for a body
  ``{"n": N, "tick": seconds, "tag": "A"}``; the generator sleeps ``tick`` after each token;
- ``work``: a plain (non-streaming) answer ``{"output": tag}`` after sleeping ``seconds``, for a
  body ``{"seconds": s, "tag": "A"}``.

When a ``tokens`` or ``work`` request carries a ``tag``, it appends ``start``/``yield``/``finally``
events with ``time.monotonic()`` (one clock for every process on Linux) to the file named by
``BENCH_EVENTS``, so the harness can count tokens produced after a client hung up without trusting
the server under test. This module is imported by the peers' own virtual environments: keep it
stdlib only.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Iterator

EVENTS_VARIABLE = "BENCH_EVENTS"


def parse_arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", choices=("echo", "tokens", "work"), default="echo")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--widget", choices=("none", "hidden", "shown"), default="none", help="litkit only")
    return parser.parse_args()


def record(kind: str, tag: str) -> None:
    """Append one event line; O_APPEND writes of one line are atomic across processes."""
    path = os.environ.get(EVENTS_VARIABLE)
    if not path:
        return
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, f"{kind} {tag} {time.monotonic():.6f}\n".encode())
    finally:
        os.close(descriptor)


def tokens(request: dict) -> Iterator[int]:
    """The ``tokens`` workload: ``n`` tokens, ``tick`` seconds apart, events when tagged."""
    count, tick, tag = int(request.get("n", 1)), float(request.get("tick", 0.0)), request.get("tag")
    if tag is None:
        for index in range(count):
            yield index
            if tick:
                time.sleep(tick)
        return
    record("start", tag)
    try:
        for index in range(count):
            record("yield", tag)
            yield index
            if tick:
                time.sleep(tick)
    finally:
        record("finally", tag)


def work(request: dict) -> dict:
    """The ``work`` workload: sleep ``seconds``, logging start and finally when tagged."""
    tag = request.get("tag")
    if tag is not None:
        record("start", tag)
    try:
        time.sleep(float(request.get("seconds", 0.0)))
    finally:
        if tag is not None:
            record("finally", tag)
    return {"output": tag}
