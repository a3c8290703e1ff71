"""What the workers print, and the tracebacks of failed hooks: a bounded ring of the last lines,
each also sent to the ``litkit.worker`` logger.

The pool feeds it the raw bytes of each worker's stdout and stderr pipes (``OutputReaders``); the handlers feed it the
tracebacks that workers report in ERROR frames. Only the server's event-loop thread writes here;
``Server.status()`` reads a copy (``logs``) through that thread, as it does the tracker.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import subprocess
import time
from typing import Any, Callable

from .channels import PipeClosed, PipeReader

__all__ = ["LineSplitter", "LogEntries", "OutputReaders", "WorkerLog", "MAX_LINE_CHARS", "LOG_LIMIT", "merge_logs"]

logger = logging.getLogger("litkit.worker")
_pool_logger = logging.getLogger("litkit.pool")  # the pool's own messages, as before they moved here

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


class OutputReaders:
    """Reads each worker's stdout and stderr into a ``WorkerLog``, line by line, until the pipes end
    (on the server's event loop)."""

    def __init__(self, log: WorkerLog) -> None:
        self._log = log
        self._tasks: set[asyncio.Task[None]] = set()

    def follow(self, worker_id: int, process: subprocess.Popen[bytes]) -> None:
        """Read ``process``'s stdout and stderr pipes from now on; Popen's own files are closed."""
        for name, pipe in (("stdout", process.stdout), ("stderr", process.stderr)):
            if pipe is not None:
                fd = os.dup(pipe.fileno())  # the reader owns its own descriptor
                pipe.close()
                task = asyncio.ensure_future(self._read(worker_id, name, PipeReader(fd)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def finish(self, drain_s: float) -> None:
        """Let the readers take the last lines of exited workers for up to ``drain_s`` seconds
        (a process a worker started may hold its pipes open), then close what is left."""
        readers = list(self._tasks)
        if readers:
            await asyncio.wait(readers, timeout=drain_s)
        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    async def _read(self, worker_id: int, name: str, pipe: PipeReader) -> None:
        splitter = LineSplitter()
        try:
            while True:
                for line in splitter.feed(await pipe.read()):
                    self._log.add(worker_id, name, line)
        except PipeClosed:
            pass
        finally:
            for line in splitter.flush():
                self._log.add(worker_id, name, line)
            pipe.close()


class LogEntries:
    """The entries of ``self.log(key, value)`` in a worker's hooks, handed to ``on_log`` (called on the
    server's loop: keep it quick; None: dropped, with one warning)."""

    def __init__(self) -> None:
        self.on_log: Callable[[str, Any], None] | None = None
        self._warned = False

    def deliver(self, worker_id: int, payload: bytes) -> None:
        """One ``LOG`` frame's entry (JSON ``{"key", "value"}``) from worker ``worker_id``."""
        on_log = self.on_log
        if on_log is None:
            if not self._warned:
                self._warned = True
                _pool_logger.warning(
                    "worker %d called self.log(), but this server has no loggers; pass loggers=[...] to LitServer "
                    "(or on_log= to serve()) to receive the entries", worker_id,
                )
            return
        try:
            entry = json.loads(payload)
            on_log(entry["key"], entry["value"])
        except Exception:  # a failing logger must not take the pool down
            _pool_logger.exception("handling self.log() from worker %d failed", worker_id)


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
