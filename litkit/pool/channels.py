"""The server's ends of the worker channels, driven by the asyncio loop directly.

``ControlChannel`` is the server's end of a worker's control socket: frames both ways, and the
write end of a request's response pipe passed along with the ``REQUEST`` frame. ``PipeReader`` is
the read end of one request's response pipe. Both are plain non-blocking syscalls plus
``loop.add_reader``/``add_writer``, not a stream framework: they sit on the per-request path, where
each layer costs microseconds on every request (see ``docs/benchmarks.md``).

Runs on the server's event-loop thread only. The wire format itself is in ``litkit.wire.protocol``.
"""

from __future__ import annotations

import array
import asyncio
import collections
import functools
import os
import socket
from typing import Callable

from ..wire.protocol import FrameParser, Kind

__all__ = ["ControlChannel", "PipeClosed", "PipeReader"]

_READ_SIZE = 256 * 1024
_FDS_LEVEL = socket.SOL_SOCKET
_FDS_TYPE = socket.SCM_RIGHTS


class PipeClosed(EOFError):
    """The response pipe reached end of file, or the server closed its end."""


class PipeReader:
    """The read end of one request's response pipe.

    Two ways to read, one mechanism: ``read_available()`` takes what the pipe holds now, and
    ``watch(callback)`` calls back once it holds more (the request relay reads this way, with no
    coroutine per request); ``read()`` is the same as a coroutine. The fd is watched only while a
    reader waits: a relay busy writing to a slow client stops reading, the pipe fills, and the
    worker's writes block. That bounds what a stream buffers in the server.
    """

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        self._loop = asyncio.get_running_loop()
        self._watching = False
        self._waiter: asyncio.Future[None] | None = None  # read()'s, while it waits
        self._closed = False

    def closed(self) -> bool:
        return self._closed

    def read_available(self) -> bytes | None:
        """The bytes the pipe holds now; None if it is empty.

        Raises:
            PipeClosed: end of file (the worker closed its end or died), or ``close()`` was called.
        """
        if self._closed:
            raise PipeClosed("the response pipe was closed by the server")
        try:
            data = os.read(self.fd, _READ_SIZE)
        except BlockingIOError:
            return None
        if not data:
            raise PipeClosed("the worker closed the response pipe")
        return data

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the loop) whenever the pipe is readable, until ``unwatch()`` or
        ``close()``. While watching already, the first callback stays (and no syscall is made)."""
        if not self._closed and not self._watching:
            self._loop.add_reader(self.fd, callback)
            self._watching = True

    def unwatch(self) -> None:
        if self._watching:
            self._watching = False
            self._loop.remove_reader(self.fd)

    async def read(self) -> bytes:
        """The bytes the pipe holds now, waiting for some if it is empty.

        Raises:
            PipeClosed: as for ``read_available()``; also when ``close()`` is called while waiting.
        """
        while True:
            data = self.read_available()
            if data is not None:
                return data
            waiter = self._waiter = self._loop.create_future()
            self.watch(functools.partial(_wake, waiter))
            try:
                await waiter
            finally:
                self._waiter = None
                self.unwatch()

    def close(self) -> None:
        """Close the read end: the worker's next write raises ``BrokenPipeError``."""
        if self._closed:
            return
        self.unwatch()
        self._closed = True
        if self._waiter is not None:
            _wake(self._waiter)
        os.close(self.fd)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ControlChannel:
    """The server's end of one worker's control socket.

    Incoming frames go to ``on_frame`` as they complete; ``on_close`` runs once, when the worker's
    end closes (its process exited) or the socket fails. ``close()`` is the server hanging up, which
    stops the worker; it does not call ``on_close``.
    """

    def __init__(self, sock: socket.socket, on_frame: Callable[[Kind, bytes], None], on_close: Callable[[], None]) -> None:
        sock.setblocking(False)
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = asyncio.get_running_loop()
        self._on_frame = on_frame
        self._on_close = on_close
        self._parser = FrameParser()
        self._unsent: collections.deque[memoryview] = collections.deque()
        self._closed = False
        self._loop.add_reader(self._fd, self._on_readable)

    @property
    def writing(self) -> bool:
        """True while bytes of an earlier message wait to be sent: no descriptor may go now."""
        return bool(self._unsent)

    def closed(self) -> bool:
        return self._closed

    def send(self, buffers: list[bytes], fds: list[int] | None = None) -> bool:
        """Send ``buffers`` as one message, with ``fds`` riding on its first byte.

        Returns False, having sent nothing, when the descriptors cannot go now (earlier bytes are
        still queued, or the socket is full); the caller keeps them and tries again later. Bytes
        the socket does not take at once are queued and sent as it drains.

        Raises:
            OSError: the socket failed (the worker is gone; ``on_close`` follows).
        """
        if self._closed:
            raise ConnectionResetError("the control socket is closed")
        if self._unsent:
            if fds:
                return False
            self._unsent.extend(memoryview(buffer) for buffer in buffers)
            return True
        ancillary = [(_FDS_LEVEL, _FDS_TYPE, array.array("i", fds))] if fds else []
        try:
            sent = self._sock.sendmsg(buffers, ancillary)
        except BlockingIOError:
            if fds:
                return False
            sent = 0
        for buffer in buffers:
            if sent >= len(buffer):
                sent -= len(buffer)
                continue
            self._unsent.append(memoryview(buffer)[sent:])
            sent = 0
        if self._unsent:
            self._loop.add_writer(self._fd, self._on_writable)
        return True

    def _on_writable(self) -> None:
        unsent = self._unsent
        try:
            while unsent:
                sent = self._sock.send(unsent[0])
                if sent < len(unsent[0]):
                    unsent[0] = unsent[0][sent:]
                    return
                unsent.popleft()
        except BlockingIOError:
            return
        except OSError:
            unsent.clear()  # the worker is gone; the reader sees end of file and reports it
        self._loop.remove_writer(self._fd)

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(_READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            self._on_close()
            return
        for kind, payload in self._parser.feed(data):
            self._on_frame(kind, payload)
            if self._closed:
                return

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        if self._unsent:
            self._unsent.clear()
            self._loop.remove_writer(self._fd)
        self._sock.close()
