"""What the caller of ``serve()`` sees while the workers start: what they print, and a line of
progress once start-up takes more than a second.

``setup()`` runs in the workers, whose output reaches the server loop's log; without this, a long
``setup()`` (loading a model) showed nothing in the notebook cell or the terminal until it ended or
failed. The lines are passed from the server's loop to the waiting caller's thread through a queue
and printed there, so they land in the cell that called ``serve()``.
"""

from __future__ import annotations

import concurrent.futures
import queue
import sys
import time
from typing import Protocol

from ..pool.logs import OutputListener

__all__ = ["wait_for_start"]


class _Host(Protocol):
    """What this needs of the server's host (``litkit.server.host``)."""

    def add_output_listener(self, listener: OutputListener) -> None: ...

    def remove_output_listener(self, listener: OutputListener) -> None: ...

PROGRESS_AFTER_S = 1.0  # the first progress line; then one every PROGRESS_EVERY_S
PROGRESS_EVERY_S = 10.0
_POLL_S = 0.1


def wait_for_start(started: concurrent.futures.Future[None], host: _Host, workers: int, timeout: float) -> None:
    """Wait for ``started`` (at most ``timeout`` seconds), printing what the workers print meanwhile
    (stdout to stdout, stderr to stderr) and a progress line after a second, then every 10 s.

    Raises:
        whatever ``started`` holds; concurrent.futures.TimeoutError past ``timeout``.
    """
    lines: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()

    def collect(worker_id: int, stream: str, line: str) -> None:  # on the server's loop (or its events thread)
        if stream in ("stdout", "stderr"):
            lines.put((stream, line))

    host.add_output_listener(collect)
    begun = time.monotonic()
    next_progress = begun + PROGRESS_AFTER_S
    try:
        while True:
            try:
                started.result(timeout=_POLL_S)
                return
            except concurrent.futures.TimeoutError:
                if time.monotonic() - begun > timeout:
                    raise
            finally:
                _print_lines(lines)
            now = time.monotonic()
            if now >= next_progress:
                print(f"litkit: starting {workers} worker{'s' if workers != 1 else ''}: setup() has run for {now - begun:.0f} s", flush=True)
                next_progress = now + PROGRESS_EVERY_S
    finally:
        host.remove_output_listener(collect)
        _print_lines(lines)


def _print_lines(lines: queue.SimpleQueue[tuple[str, str]]) -> None:
    while True:
        try:
            stream, line = lines.get_nowait()
        except queue.Empty:
            return
        print(line, file=sys.stdout if stream == "stdout" else sys.stderr, flush=True)
