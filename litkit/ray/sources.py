"""Where a replica's chunks come from, with cancellation: a sync iterator driven from a thread of its
own, or an async iterator awaited on the replica's event loop.

Ray Serve's documented streaming pattern (a ``StreamingResponse`` over the user's generator) runs a
sync generator in Starlette's thread pool and never closes it when the client leaves: the generator
keeps producing into nothing. Here a sync generator is advanced one item at a time, each ``next()``
on the same dedicated thread, only when the response asks for the next chunk. When the client
leaves (Ray cancels the request's task) the stream queues ``close()`` on that thread: it runs right
after the ``next()`` in progress, whose item is dropped, so ``GeneratorExit`` reaches user code at
its ``yield`` and its ``finally`` runs; at most one more item is produced after the hang-up.

An async iterator needs no thread: the cancellation reaches user code at its current ``await``
(``CancelledError``), and ``aclose()`` follows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from typing import Any, AsyncIterator, Callable, Iterator

__all__ = ["END", "Cancellation", "ThreadedIterator", "AsyncSource"]

# What ``next_item`` returns when the iterator is done (StopIteration cannot cross a Future).
END = object()


class Cancellation:
    """What ``litkit.cancelled()`` asks for one request on a replica: set when its client leaves or
    its timeout passes."""

    def __init__(self) -> None:
        self.cancelled = False

    def is_cancelled(self) -> bool:
        return self.cancelled


class ThreadedIterator:
    """A sync iterator made and advanced on one thread of its own, one item per ``next_item()``.

    ``make`` runs on that thread too (it calls the hooks before the first chunk: ``decode_request``,
    ``predict``, ``encode_response``), in a copy of the caller's context, so ``litkit.cancelled()``
    sees the request's ``Cancellation``.
    """

    def __init__(self, make: Callable[[], Iterator[Any]], on_closed: Callable[[], None] | None = None) -> None:
        self._make = make
        self._on_closed = on_closed  # called once the iterator is closed on its thread
        self._iterator: Iterator[Any] | None = None
        self._context = contextvars.copy_context()
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="litkit-ray-stream")
        self._closing: asyncio.Future[None] | None = None

    async def next_item(self) -> Any:
        """The next item, or ``END``; an exception the hooks raise is raised here."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._context.run, self._step)

    def _step(self) -> Any:
        if self._iterator is None:
            self._iterator = iter(self._make())
        return next(self._iterator, END)

    async def aclose(self) -> None:
        """Close the iterator on its thread, after the step in progress (if any); wait for it."""
        if self._closing is None:
            loop = asyncio.get_running_loop()
            self._closing = loop.run_in_executor(self._thread, self._context.run, self._close)
            self._thread.shutdown(wait=False)
            if self._on_closed is not None:
                on_closed = self._on_closed
                self._closing.add_done_callback(lambda _: on_closed())
        # Shielded: a second cancellation (Ray stopping the replica) must not skip the close.
        await asyncio.shield(self._closing)

    def _close(self) -> None:
        close = getattr(self._iterator, "close", None)
        if close is not None:
            close()  # GeneratorExit at the user's yield; a `yield from` passes it down the chain


class AsyncSource:
    """An async iterator made on the replica's loop by ``make``, on the first ``next_item()``."""

    def __init__(self, make: Callable[[], AsyncIterator[Any]]) -> None:
        self._make = make
        self._iterator: AsyncIterator[Any] | None = None

    async def next_item(self) -> Any:
        if self._iterator is None:
            self._iterator = self._make().__aiter__()
        try:
            return await self._iterator.__anext__()
        except StopAsyncIteration:
            return END

    async def aclose(self) -> None:
        aclose = getattr(self._iterator, "aclose", None)
        if aclose is not None:
            await asyncio.shield(aclose())
