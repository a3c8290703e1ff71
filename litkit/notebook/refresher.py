"""The thread that keeps a live view fresh: ``refresh()`` every interval until halted or final.

Shared by the local dashboard (``litkit.notebook.dashboard``) and the Ray Serve view
(``litkit.notebook.ray_dashboard``): both poll a status snapshot from a daemon thread, keep going
when one refresh fails, end once the server is in a final state, and are halted (and joined) by
their ``finish()`` (``Refresher.finish``: halt, then one last refresh) or ``close()``, from any
thread but their own.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

__all__ = ["Refresher"]

_JOIN_TIMEOUT_S = 5.0


class Refresher:
    """Calls ``refresh()`` every ``interval`` seconds on a daemon thread named ``name`` until
    ``halt()``, or until ``done()`` is true after a refresh. A refresh that raises is logged on
    ``logger`` and the next one comes as usual."""

    def __init__(self) -> None:
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, name: str, interval: float, refresh: Callable[[], object], done: Callable[[], bool], logger: logging.Logger) -> None:
        def run() -> None:
            while not self._halt.wait(interval):
                try:
                    refresh()
                except Exception:  # a failed refresh must not end the view
                    logger.exception("%s could not refresh", name)
                    continue
                if done():
                    return

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread is not None

    def alive(self) -> bool:
        """Whether the refresh thread runs now."""
        return self._thread is not None and self._thread.is_alive()

    def halt(self) -> None:
        """Stop refreshing; wait for a refresh in progress, unless called from the thread itself."""
        self._halt.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT_S)

    def finish(self, final_refresh: Callable[[], object], what: str, logger: logging.Logger) -> None:
        """``halt()``, then ``final_refresh()`` on the calling thread; a failure of it (e.g. the
        kernel is shutting down) is logged at debug level on ``logger`` as ``what``'s."""
        self.halt()
        try:
            final_refresh()
        except Exception:  # the view keeps what it showed last
            logger.debug("%s's final refresh failed", what, exc_info=True)
