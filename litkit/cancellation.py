"""``litkit.cancelled()``: lets a hook ask, cheaply, whether its request is still wanted.

The worker sets the current request's response channel here while it runs the hooks. The check is
a zero-timeout poll of that channel's pipe, no round trip to the server: the server closes its read
end when the client leaves or the timeout passes, and the kernel reports the write end as broken.

Stdlib only: this module is imported by worker processes.
"""

from __future__ import annotations

import contextvars
from typing import Protocol

__all__ = ["cancelled"]


class _Cancellable(Protocol):
    def is_cancelled(self) -> bool: ...


# A module global rather than a thread-local: a hook may hand work to its own threads and those
# threads should see the same answer. A sync worker runs one request at a time.
_current: _Cancellable | None = None
# An async worker runs several requests on one thread: each request's task sets its own channel in
# its own context (asyncio gives every task a copy of the context).
_task_current: contextvars.ContextVar[_Cancellable | None] = contextvars.ContextVar("litkit_request", default=None)


def cancelled() -> bool:
    """Return True once the current request's client has gone away or its timeout has passed.

    Call it inside a hook (``decode_request``, ``predict``, ``encode_response``) to stop a long
    loop early. Outside a request (in ``setup``, or in the serving process) it returns False.
    """
    current = _current
    if current is None:
        current = _task_current.get()
    return current is not None and current.is_cancelled()


def _set_current(channel: _Cancellable | None) -> None:
    global _current
    _current = channel


def _set_task_current(channel: _Cancellable) -> None:
    """Set the current request for the running asyncio task (and the tasks it starts)."""
    _task_current.set(channel)
