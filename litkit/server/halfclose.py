"""Telling a client that half-closed from one that left, and answering the one that stayed.

A client may send its request and then ``shutdown(SHUT_WR)``: its FIN says it sends nothing more,
not that it stopped reading, and HTTP/1.1 allows it. A client that leaves (killed, timed out,
Ctrl-C, a closed tab) sends the same FIN, and TCP tells the two apart only once data reaches the
peer: a socket that was closed answers it with a reset. Tornado's IOStream takes any end of file
for a close and closes its file descriptor, so:

1. When a request is complete, the relay keeps a ``Spare``: a duplicate of the connection's file
   descriptor, so Tornado's close leaves the TCP connection open (``keep_spare``).
2. End of file before the answer's first byte: ``Spare.probe`` sends an interim
   ``HTTP/1.1 100 Continue`` on it (a client must skip a 1xx it did not ask for, RFC 9110 15.2;
   HTTP/1.0 has none, so it keeps end of file as a hang-up). A send that fails is a hang-up.
3. Then it watches for the reset: an ``epoll`` object holding the socket with an empty event mask
   reports only EPOLLERR/EPOLLHUP, and its own file descriptor is readable when they come; the
   event loop watches that. A reset, or a later write that fails, calls the hang-up callback; a
   client that only half-closed gets its answer on ``SpareConnection`` (``Connection: close``),
   and the spare is closed after it.
4. End of file while a stream is under way (HTTP/1.1, chunked, everything written so far sent):
   ``Spare.take_over`` sends ``0`` at once, the first digit of the next chunk's size (a size may
   have leading zeros, RFC 9112 7.1), which draws the reset from a client that closed, and goes on
   writing the stream on the spare for one that half-closed.

Each probe, and each later write on the spare, is followed by a look at the socket's pending error
(``SO_ERROR``, one system call): on loopback the peer's reset is processed within the sending
call itself, so a client that closed is seen in the same turn of the loop, as fast as Tornado sees
an end of file. Across a network the reset takes a round trip, and the watch below reports it.

Telling them apart costs one round trip (on loopback, none: see above). Without
``select.epoll`` (not Linux) there is no spare and end of file stays a hang-up. Only public API of
Tornado (``IOStream.socket``) and asyncio (``add_reader``/``add_writer``) is used: the answer is
written here, on the socket, because an IOStream on the spare would read the end of file again
and close it.
"""

from __future__ import annotations

import asyncio
import os
import re
import select
import socket
from typing import Callable

from tornado.httputil import HTTPHeaders, ResponseStartLine
from tornado.iostream import IOStream, SSLIOStream

__all__ = ["CHUNKED_PROBE", "PROBE", "SUPPORTED", "Spare", "SpareConnection", "SocketWriter", "keep_spare"]

# The interim answer that draws a reset from a client that closed.
PROBE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Mid-way through a chunked body: the first digit of the next chunk's size (leading zeros are allowed).
CHUNKED_PROBE = b"0"
# A half-close can be told from a close only where an empty epoll mask reports a reset.
SUPPORTED = hasattr(select, "epoll")

_CR_OR_LF = re.compile(r"[\r\n]")


def keep_spare(stream: IOStream, version: str, loop: asyncio.AbstractEventLoop, context: object) -> Spare | None:
    """A spare handle on the connection of a complete request, or None where a half-close cannot
    be told from a close (not HTTP/1.1, TLS, no ``select.epoll``, or the connection is gone)."""
    if not SUPPORTED or version != "HTTP/1.1" or isinstance(stream, SSLIOStream) or stream.closed():
        return None
    try:
        fd = os.dup(stream.socket.fileno())
    except OSError:
        return None
    return Spare(fd, loop, context)


class Spare:
    """A duplicate file descriptor of a request's connection, closed when the request ends."""

    __slots__ = ("_fd", "_loop", "_context", "_writer")

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop, context: object) -> None:
        self._fd = fd
        self._loop = loop
        self._context = context
        self._writer: SocketWriter | None = None

    def probe(self, on_hang_up: Callable[[], None]) -> SpareConnection | None:
        """The client sent end of file before any byte of its answer: send the interim 100 and
        watch for a reset. Returns the connection to answer on, or None if the send failed or drew
        a reset at once (the client is gone). ``on_hang_up`` is called, once and soon after, if a reset or a failed
        write shows the client gone later."""
        return self._start(PROBE, on_hang_up, chunked=False)

    def take_over(self, on_hang_up: Callable[[], None]) -> SpareConnection | None:
        """End of file while a chunked stream is under way, everything written so far sent: go on
        writing the stream here (issue 25, bug 8: a half-close 10 ms after a streaming request cut
        the stream short). The probe is one byte, ``0``: a chunk size may have leading zeros
        (RFC 9112 7.1), so it is the start of the next chunk's size line or of the last chunk
        (``00``), whatever comes. Returns None if the client is gone already (on loopback, a client
        that closed is seen here); else ``on_hang_up`` is called as for ``probe``."""
        return self._start(CHUNKED_PROBE, on_hang_up, chunked=True)

    def _start(self, probe: bytes, on_hang_up: Callable[[], None], chunked: bool) -> SpareConnection | None:
        if self._writer is not None or self._fd < 0:
            raise RuntimeError("a spare is probed or taken over once, before it is closed")
        writer = SocketWriter(socket.socket(fileno=self._fd), self._loop)
        self._fd = -1  # the writer's socket owns it now
        self._writer = writer
        writer.write(probe)
        if writer.closed():
            return None
        writer.watch_for_reset(on_hang_up)
        return SpareConnection(writer, self._context, chunked)

    def close(self) -> None:
        """End the spare handle (and the TCP connection, if Tornado closed its own)."""
        if self._writer is not None:
            self._writer.close()
        elif self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class SocketWriter:
    """Writes to a socket whose peer may have half-closed it, and never reads it; the part of
    Tornado's IOStream the relay uses: ``write`` (whose future resolves once everything written is
    sent, or the writer closed), ``writing``, ``closed``, ``close``, ``set_nodelay``."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        sock.setblocking(False)
        self._socket = sock
        self._fd = sock.fileno()
        self._loop = loop
        self._buffer = bytearray()
        self._drained: list[asyncio.Future[None]] = []
        self._waiting_to_send = False
        self._reset_watch: select.epoll | None = None
        self._on_hang_up: Callable[[], None] | None = None
        self._closed = False

    def watch_for_reset(self, on_hang_up: Callable[[], None]) -> None:
        """Call ``on_hang_up`` when the peer resets the connection or a write fails."""
        self._on_hang_up = on_hang_up
        watch = select.epoll()
        watch.register(self._fd, 0)  # nothing asked for: only EPOLLERR and EPOLLHUP are reported
        self._reset_watch = watch
        self._loop.add_reader(watch.fileno(), self._hung_up)

    def write(self, data: bytes) -> asyncio.Future[None]:
        drained: asyncio.Future[None] = self._loop.create_future()
        if data and not self._closed:
            self._buffer += data
            self._send()
        if self._buffer:
            self._drained.append(drained)
        else:
            drained.set_result(None)
        return drained

    def writing(self) -> bool:
        return bool(self._buffer)

    def closed(self) -> bool:
        return self._closed

    def set_nodelay(self, value: bool) -> None:
        if not self._closed:
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if value else 0)

    def close(self) -> None:
        """Close the socket; no hang-up is reported after this."""
        if self._closed:
            return
        self._closed = True
        self._on_hang_up = None
        self._buffer.clear()
        if self._waiting_to_send:
            self._loop.remove_writer(self._fd)
        if self._reset_watch is not None:
            self._loop.remove_reader(self._reset_watch.fileno())
            self._reset_watch.close()
        self._socket.close()
        self._resolve_drained()

    def _send(self) -> None:
        while self._buffer:
            try:
                sent = self._socket.send(self._buffer, socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # EPIPE, ECONNRESET: the peer is gone
                self._hung_up()
                return
            del self._buffer[:sent]
        if self._socket.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):  # a reset the send drew in (on loopback, at once)
            self._hung_up()
            return
        if self._buffer and not self._waiting_to_send:
            self._loop.add_writer(self._fd, self._send)
            self._waiting_to_send = True
        elif not self._buffer:
            if self._waiting_to_send:
                self._loop.remove_writer(self._fd)
                self._waiting_to_send = False
            self._resolve_drained()

    def _hung_up(self) -> None:
        # Told on the next turn of the loop, as Tornado tells a close: the caller may be writing.
        on_hang_up = self._on_hang_up
        self.close()
        if on_hang_up is not None:
            self._loop.call_soon(on_hang_up)

    def _resolve_drained(self) -> None:
        drained, self._drained = self._drained, []
        for future in drained:
            if not future.done():
                future.set_result(None)


class SpareConnection:
    """The answer to a client that half-closed, on its spare handle: the part of Tornado's
    ``HTTP1Connection`` the relay uses (``write_headers``, ``write``, ``finish``, ``stream``,
    ``context``). It says ``Connection: close``, and frames a body without ``Content-Length`` as
    chunks."""

    __slots__ = ("stream", "context", "_chunked")

    def __init__(self, stream: SocketWriter, context: object, chunked: bool = False) -> None:
        """``chunked``: the head went out already, on Tornado's connection, with a chunked body."""
        self.stream = stream
        self.context = context
        self._chunked = chunked

    def write_headers(self, start_line: ResponseStartLine, headers: HTTPHeaders, chunk: bytes | None = None) -> asyncio.Future[None]:
        headers["Connection"] = "close"
        code = start_line.code
        self._chunked = "Content-Length" not in headers and code >= 200 and code not in (204, 304)
        if self._chunked:
            headers["Transfer-Encoding"] = "chunked"
        lines = [f"HTTP/1.1 {code} {start_line.reason}"] + [f"{name}: {value}" for name, value in headers.get_all()]
        for line in lines:
            if _CR_OR_LF.search(line):
                raise ValueError(f"illegal characters (CR or LF) in a response header: {line!r}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin1")
        return self.stream.write(head + self._frame(chunk) if chunk else head)

    def write(self, chunk: bytes) -> asyncio.Future[None]:
        return self.stream.write(self._frame(chunk))

    def finish(self) -> None:
        """The body is complete (the connection is closed once it is sent, by ``Spare.close``)."""
        if self._chunked:
            self.stream.write(b"0\r\n\r\n")

    def _frame(self, chunk: bytes) -> bytes:
        if not self._chunked or not chunk:
            return chunk
        return b"%x\r\n%s\r\n" % (len(chunk), chunk)
