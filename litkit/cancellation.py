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


class _Rows(Protocol):
    """A batch's requests (``litkit.worker.batch``): whether the client of one of them has left."""

    def is_row_cancelled(self, index: int) -> bool: ...


# A module global rather than a thread-local: a hook may hand work to its own threads and those
# threads should see the same answer. A sync worker runs one request at a time.
_current: _Cancellable | None = None
# An async worker runs several requests on one thread: each request's task sets its own channel in
# its own context (asyncio gives every task a copy of the context).
_task_current: contextvars.ContextVar[_Cancellable | None] = contextvars.ContextVar("litkit_request", default=None)


def cancelled(index: int | None = None) -> bool:
    """Return True once the current request's client has gone away or its timeout has passed.

    Call it inside a hook (``decode_request``, ``predict``, ``encode_response``) to stop a long
    loop early. Outside a request (in ``setup``, or in the serving process) it returns False.

    Under dynamic batching (``max_batch_size`` above 1) the hooks serve several requests at once:
    ``cancelled()`` is True once every client of the batch has left, and ``cancelled(i)`` once the
    client of the batch's request ``i`` (its index in ``predict``'s list) has, so that a batched
    stream can drop that row at its next step. In a request that is not batched, ``cancelled(0)``
    is ``cancelled()``; outside a request, every index answers False.

    Raises:
        IndexError: ``index`` is not a request of the current batch (in a request that is not
            batched: not 0).
    """
    current = _current
    if current is None:
        current = _task_current.get()
    if index is None:
        return current is not None and current.is_cancelled()
    if isinstance(index, bool) or not isinstance(index, int):
        raise TypeError(f"litkit.cancelled(index): index is the request's position in the batch (an int), got {index!r}")
    if current is None:
        return False
    rows: _Rows | None = current if hasattr(current, "is_row_cancelled") else None  # type: ignore[assignment]
    if rows is not None:
        return rows.is_row_cancelled(index)
    if index != 0:
        raise IndexError(f"litkit.cancelled({index}): this request is not part of a batch (max_batch_size=1), so its only index is 0")
    return current is not None and current.is_cancelled()


class _BatchRows:
    """``litkit.cancelled()`` during a batch: True once every client of the batch has left;
    ``litkit.cancelled(i)``: once the client of request ``i`` (its index in ``predict``'s list)
    has. ``members``: each request's own cancellation, in ``predict``'s order (a batch that takes
    joiners appends to it)."""

    def __init__(self, members: list[_Cancellable]) -> None:
        self.members = members

    def is_cancelled(self) -> bool:
        return all(member.is_cancelled() for member in self.members)

    def is_row_cancelled(self, index: int) -> bool:
        if not 0 <= index < len(self.members):
            raise IndexError(f"litkit.cancelled({index}): this batch holds {len(self.members)} requests, indexed 0 to {len(self.members) - 1}")
        return self.members[index].is_cancelled()


def _set_current(channel: _Cancellable | None) -> None:
    global _current
    _current = channel


def _set_task_current(channel: _Cancellable) -> None:
    """Set the current request for the running asyncio task (and the tasks it starts)."""
    _task_current.set(channel)
