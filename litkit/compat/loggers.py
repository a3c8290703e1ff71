"""``ls.Logger`` and the thread that feeds it: LitServe's loggers, fed by ``self.log(key, value)``.

A hook calls ``self.log("latency", 0.12)`` in a worker; the entry reaches the server as a LOG
frame (``serve(on_log=...)``) and goes on a queue; one thread per server (``litkit-loggers-<port>``)
calls each logger's ``process(key, value)``, so a slow logger never holds up the server (LitServe
runs its loggers in a process of their own for the same reason).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable, Sequence

__all__ = ["Logger", "LoggerRelay", "check_loggers"]

logger = logging.getLogger("litkit.compat")

_POLL_S = 0.2


class Logger:
    """LitServe's ``ls.Logger``: subclass it and define ``process(key, value)``."""

    def process(self, key: str, value: Any) -> None:
        """Handle one ``self.log(key, value)`` entry (called on the loggers' thread)."""
        raise NotImplementedError(f"{type(self).__name__} must define process(self, key, value)")

    def mount(self, path: str, app: Any) -> None:
        """LitServe mounts an ASGI app here (e.g. Prometheus' ``/metrics``); litkit cannot."""
        raise TypeError(
            f"{type(self).__name__}.mount({path!r}, ...): litkit cannot mount ASGI apps; litkit serves "
            "Prometheus metrics at /metrics already (docs/migrating-from-litserve.md)"
        )


def check_loggers(loggers: Any) -> list[Logger]:
    """LitServe's ``loggers=`` (one Logger, or a list) as a list.

    Raises:
        ValueError: something that is not an ``ls.Logger``.
    """
    if loggers is None:
        return []
    items = loggers if isinstance(loggers, (list, tuple)) else [loggers]
    for item in items:
        if not isinstance(item, Logger):
            raise ValueError(f"loggers must be ls.Logger instances (subclass ls.Logger and define process), got {type(item).__name__}")
    return list(items)


class LoggerRelay:
    """The queue between the server's thread and the loggers, and the thread that drains it."""

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.loggers = list(loggers)
        self._queue: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._until: Callable[[], bool] = lambda: False
        self._on_end: Callable[[], None] | None = None

    def put(self, key: str, value: Any) -> None:
        """``serve(on_log=...)``: called on the server's thread; only queues."""
        self._queue.put((key, value))

    def start(self, name: str, until: Callable[[], bool], on_end: Callable[[], None] | None = None) -> None:
        """Start the thread; it ends at ``stop()``, or once ``until()`` is true and the queue is
        empty, and then calls ``on_end`` (not after ``stop()``)."""
        self._until = until
        self._on_end = on_end
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Process what is queued, then end the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            try:
                entry = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if self._until():
                    if self._on_end is not None:
                        try:
                            self._on_end()
                        except Exception:  # reported, as any callback failure
                            logger.exception("a callback's on_server_end raised")
                    return
                continue
            if entry is None:
                return
            for each in self.loggers:
                try:
                    each.process(*entry)
                except Exception:  # one failing logger must not stop the others
                    logger.exception("%s.process(%r, ...) raised", type(each).__name__, entry[0])
