"""The worker's request loop for async APIs: ``async def predict`` or an async generator.

The requests run as tasks on one asyncio event loop, on the worker's main thread, up to
``max_concurrency`` at a time (the server never sends more). A reader thread does the blocking
reads of the control socket and hands each ``REQUEST`` to the loop with ``call_soon_threadsafe``;
each task writes its own response pipe and sends ``DONE`` when it ends.

Cancellation, as for sync hooks, comes from the request's response pipe: the loop watches the
pipe's write end (the kernel reports an error on it once the server closes the read end), and the
task is cancelled at once, so ``CancelledError`` reaches the hook at its current ``await``. A
write that fails (the client left between two chunks) ends the chunk loop instead, and the
generators are closed with ``aclose()``, so ``GeneratorExit`` reaches the hook at its ``yield``.
Either way its ``finally`` blocks run. ``litkit.cancelled()`` answers per task. Pipe writes never
block the loop: a request whose client reads slowly waits alone. The hooks are called through
``litkit.contract.answer.answer_async``, as a Ray Serve replica calls them.

Stdlib only (plus what ``litkit.worker`` passes in): this module runs in worker processes.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import traceback
from typing import Any, Callable, Protocol

from ..api import LitAPI
from ..cancellation import _set_task_current
from ..contract.answer import answer_async
from ..wire.protocol import ChannelClosed, Kind, MessageReader, ProtocolError, decode_request, encode_frame, send_message

__all__ = ["AsyncRequestLoop"]


class Channel(Protocol):
    """What the worker's response channel offers (``litkit.worker.main.ResponseChannel``)."""

    fd: int
    broken: bool

    def is_cancelled(self) -> bool: ...

    def close(self) -> None: ...


class AsyncRequestLoop:
    """Runs requests for an async API as concurrent tasks until the control socket closes."""

    def __init__(
        self, api: LitAPI, control: socket.socket, messages: MessageReader, stream: bool, open_channel: Callable[[int], Channel], spec: Any = None
    ) -> None:
        self.api = api
        self.spec = spec  # the endpoint's spec, or None
        self.control = control  # the reader thread reads it through ``messages``; tasks send DONE on it
        self.messages = messages
        self.stream = stream
        self.open_channel = open_channel
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self) -> int:
        return asyncio.run(self._main())

    async def _main(self) -> int:
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        reader = threading.Thread(target=self._read_control, args=(loop, closed), name="litkit-control-reader", daemon=True)
        reader.start()
        await closed
        for task in list(self._tasks):  # the server is gone or stopping us: end what still runs
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        return 0

    def _read_control(self, loop: asyncio.AbstractEventLoop, closed: asyncio.Future[None]) -> None:
        """Reader thread: blocking reads of the control socket, each message handed to the loop."""
        try:
            while True:
                kind, payload, fds = self.messages.recv()
                if kind != Kind.REQUEST or len(fds) != 1:
                    raise ProtocolError(f"protocol error: expected REQUEST with one fd, got {kind!r} with {len(fds)} fds")
                loop.call_soon_threadsafe(self._start, payload, fds[0])
        except (ChannelClosed, ConnectionError):
            pass  # the server closed the control socket: stop
        except BaseException:  # noqa: BLE001 - a protocol error: say so, then stop like on a close
            traceback.print_exc()
        try:
            loop.call_soon_threadsafe(_resolve_once, closed)
        except RuntimeError:
            pass  # the loop already ended

    def _start(self, payload: bytes, fd: int) -> None:
        request_id, body = decode_request(payload)
        task = asyncio.ensure_future(self._handle(request_id, body, self.open_channel(fd)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, request_id: str, body: bytes, channel: Channel) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        _set_task_current(channel)
        os.set_blocking(channel.fd, False)  # see _send
        # A pipe's write end never turns readable; the error the kernel reports once the server
        # closes the read end wakes this "reader" instead.
        loop.add_reader(channel.fd, self._on_client_gone, loop, channel, task)
        try:
            if not channel.is_cancelled():  # the client may have left while this was in transit
                await self._send_answer(request_id, body, channel)
        except (BrokenPipeError, asyncio.CancelledError):
            if not channel.broken:
                raise  # not the client leaving: the worker is shutting down
        finally:
            loop.remove_reader(channel.fd)
            channel.close()
        try:
            send_message(self.control, Kind.DONE, request_id.encode())
        except OSError:
            pass  # the server is gone; the reader thread ends the loop

    def _on_client_gone(self, loop: asyncio.AbstractEventLoop, channel: Channel, task: asyncio.Task[None] | None) -> None:
        loop.remove_reader(channel.fd)
        channel.broken = True
        if task is not None:
            task.cancel()

    async def _send_answer(self, request_id: str, body: bytes, channel: Channel) -> None:
        """Send each frame of the answer (``litkit.contract.answer``); on the way out, however it
        ends, close the answer, which closes the user's generators."""
        frames = answer_async(self.api, self.stream, body, request_id, self.spec)
        try:
            async for kind, payload in frames:
                await _send(channel, kind, payload)
        finally:
            await frames.aclose()


async def _send(channel: Channel, kind: Kind, payload: bytes = b"") -> None:
    """Write one frame without blocking the loop: a full pipe (a slow client) makes only this
    request wait, never the worker's other requests.

    Raises:
        BrokenPipeError: the server closed the pipe (the client left); ``channel.broken`` is set.
    """
    view = memoryview(encode_frame(kind, payload))
    while view:
        try:
            written = os.write(channel.fd, view)
        except BlockingIOError:
            await _writable(channel.fd)
            continue
        except BrokenPipeError:
            # The chunk loop ends and closes the generators (GeneratorExit); the pipe watcher must
            # not also cancel the task while they close.
            asyncio.get_running_loop().remove_reader(channel.fd)
            channel.broken = True
            raise
        view = view[written:]


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_writer(fd, _resolve_once, ready)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


def _resolve_once(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
