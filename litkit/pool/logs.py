"""What the workers print, and the tracebacks of failed hooks: a bounded ring of the last lines,
each also sent to the ``litkit.worker`` logger.

The pool feeds it the raw bytes of each worker's stdout and stderr pipes; the handlers feed it the
tracebacks that workers report in ERROR frames. Only the server's event-loop thread writes here;
``Server.status()`` reads a copy (``logs``) through that thread, as it does the tracker.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, Callable

__all__ = ["LineSplitter", "WorkerLog", "MAX_LINE_CHARS", "LOG_LIMIT", "merge_logs"]

logger = logging.getLogger("litkit.worker")

LOG_LIMIT = 200  # lines kept for status()["logs"]
MAX_LINE_CHARS = 2000  # a longer line is cut into pieces of this size

# (worker id, stream, text): stream is "stdout", "stderr" or "traceback"
OutputListener = Callable[[int, str, str], None]


class LineSplitter:
    """Turns the bytes of one pipe into text lines: decoded with ``errors="replace"`` (binary junk
    cannot break anything) and never longer than ``MAX_LINE_CHARS``, so a stream without newlines
    cannot grow a buffer without bound."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, data: bytes) -> list[str]:
        *lines, self._pending = (self._pending + data).split(b"\n")
        while len(self._pending) > MAX_LINE_CHARS:
            lines.append(self._pending[:MAX_LINE_CHARS])
            self._pending = self._pending[MAX_LINE_CHARS:]
        return [piece for line in lines for piece in _pieces(_decode(line))]

    def flush(self) -> list[str]:
        """The unfinished last line, if any (the pipe reached end of file)."""
        rest, self._pending = self._pending, b""
        return _pieces(_decode(rest)) if rest else []


class WorkerLog:
    """The last ``LOG_LIMIT`` lines from the workers of one endpoint (``endpoint``: its path), oldest first."""

    def __init__(self, endpoint: str | None = None, limit: int = LOG_LIMIT) -> None:
        self.endpoint = endpoint
        self._lines: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
        self.listeners: list[OutputListener] = []

    def add(self, worker_id: int, stream: str, text: str, to_logger: bool = True) -> None:
        """Record one line (a multi-line ``text`` is split) and send it to the ``litkit.worker``
        logger at INFO, unless ``to_logger`` is False (a traceback another logger reported)."""
        for line in text.splitlines() or [""]:
            for piece in _pieces(line):
                self._lines.append({"time": time.time(), "endpoint": self.endpoint, "worker": worker_id, "stream": stream, "text": piece})
                if to_logger and logger.isEnabledFor(logging.INFO):
                    logger.info("[worker %d %s] %s", worker_id, stream, piece, extra={"worker_id": worker_id, "stream": stream, "endpoint": self.endpoint})
                for listener in self.listeners:
                    listener(worker_id, stream, piece)

    def snapshot(self) -> list[dict[str, Any]]:
        return [dict(line) for line in self._lines]


def merge_logs(logs: list[WorkerLog], limit: int = LOG_LIMIT) -> list[dict[str, Any]]:
    """The last ``limit`` lines of several endpoints' logs, oldest first."""
    if len(logs) == 1:
        return logs[0].snapshot()
    lines = sorted((line for log in logs for line in log.snapshot()), key=lambda line: line["time"])
    return lines[-limit:]


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace").rstrip("\r")


def _pieces(line: str) -> list[str]:
    if len(line) <= MAX_LINE_CHARS:
        return [line]
    return [line[i : i + MAX_LINE_CHARS] for i in range(0, len(line), MAX_LINE_CHARS)]
