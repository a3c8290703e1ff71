"""The server's side of the host boundary: runs in the server's own sub-interpreter (Python 3.13+)
or process (3.10-3.12), never in the caller's interpreter (``litkit.server.host`` is the caller's).

``serve_in_this_interpreter`` reads the ``HOST_INIT``, makes the ``ServerLoop`` from its recipe and
serves until stopped; ``HostLink`` answers the caller's calls (``Call``, dispatched by a table) and
sends what the server says unasked (``Event``: ``litkit.server.host_boundary``). This module
imports only the stdlib, the wire protocol and the server's own modules, never the caller's side
(``litkit.server.host``, ``litkit.server.host_caller``), the notebook side or the user's code;
``litkit.server``'s package ``__init__`` (``serve``) still loads the rest of the package here.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import pickle
import signal
import socket
import sys
from typing import Any, Callable

from ..wire.protocol import HEADER, FrameParser, Kind, encode_frame
from ..worker.lifetime import die_with_parent
from .host_boundary import Call, Event, ServerRecipe, lengthen_slice, portable
from .loop import ServerLoop

__all__ = ["HostLink", "serve_in_a_child_process", "serve_in_this_interpreter"]

logger = logging.getLogger("litkit.server")

_OUTBOX_LIMIT = 1 << 20  # bytes of log and output events the server queues for a busy caller


class HostLink:
    """The server's end of the host socket, on the server's loop: calls in, replies and events out.

    Events for a caller that does not read (a busy cell's events thread waits for the caller's
    GIL) are queued up to ``_OUTBOX_LIMIT`` bytes; past it log and output events are dropped and
    counted, never replies or the start's outcome.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.server_loop: ServerLoop | None = None  # set once made (its Stop sends through this link)
        self._outbox: collections.deque[memoryview] = collections.deque()
        self._queued = 0
        self.dropped = 0
        self._loop: Any = None
        # Each call's handler: its reply's value, or a future of it (REPLACE answers once the new
        # version serves, or failed to start).
        self._handlers: dict[Call, Callable[..., Any]] = {
            Call.STATUS: lambda server_loop, state: server_loop.snapshot(state),
            Call.CANCEL: lambda server_loop, request_id, reason: server_loop.cancel(request_id, reason),
            Call.STOP: lambda server_loop, drain: server_loop.stop(drain),
            Call.LISTEN_OUTPUT: lambda server_loop: server_loop.add_output_listener(lambda *line: self.event(Event.OUTPUT, line)),
            Call.REPLACE: self._replace,
        }

    def attach(self) -> None:
        """Start reading calls; runs on the server's loop once it exists."""
        self._loop = asyncio.get_running_loop()
        self._sock.setblocking(False)
        parser = FrameParser()

        def on_readable() -> None:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # the caller's interpreter is going away: stop serving
                self._loop.remove_reader(self._sock.fileno())
                if self.server_loop is not None:
                    self.server_loop.stop(0.0)
                return
            for kind, payload in parser.feed(data):
                if kind == Kind.HOST_CALL:
                    self._answer(*pickle.loads(payload))

        self._loop.add_reader(self._sock.fileno(), on_readable)

    def _answer(self, call_id: int, call: Call, arguments: tuple[Any, ...]) -> None:
        try:
            if self.server_loop is None:
                raise RuntimeError("the server is not made yet")
            handler = self._handlers.get(call)
            if handler is None:
                raise ValueError(f"unknown call {call!r} on the host socket")
            value = handler(self.server_loop, *arguments)
        except Exception as error:  # noqa: BLE001 - the caller raises it
            self._reply(call_id, False, error)
            return
        if isinstance(value, concurrent.futures.Future):
            value.add_done_callback(lambda done: self._reply(call_id, done.exception() is None, done.exception()))
        else:
            self._reply(call_id, True, value)

    def _replace(self, server_loop: ServerLoop, recipe: ServerRecipe) -> concurrent.futures.Future[None]:
        forward = (lambda key, value: self.event(Event.LOG_ENTRY, (key, value))) if recipe.forwards_log else None
        return server_loop.replace(lambda current: recipe.serving(forward, previous=current))

    def _reply(self, call_id: int, ok: bool, value: Any) -> None:
        reply = (call_id, ok, value if ok else portable(value))
        self._send(encode_frame(Kind.HOST_REPLY, pickle.dumps(reply)), droppable=False)

    def event(self, event: Event, value: Any, droppable: bool = True) -> None:
        try:
            payload = pickle.dumps((event, value))
        except Exception as error:  # noqa: BLE001 - an event that cannot cross says so instead
            payload = pickle.dumps((event, portable(error)))
        self._send(encode_frame(Kind.HOST_EVENT, payload), droppable)

    def _send(self, frame: bytes, droppable: bool) -> None:
        on_loop = self._loop is not None and self._loop.is_running()
        if not on_loop:  # before the loop runs or after it ended: blocking, in order
            self._flush_blocking()
            self._sock.setblocking(True)
            try:
                self._sock.sendall(frame)
            except OSError:
                pass  # the caller is gone
            return
        if droppable and self._queued + len(frame) > _OUTBOX_LIMIT:
            self.dropped += 1
            return
        if not self._outbox:
            try:
                sent = self._sock.send(frame)
            except BlockingIOError:
                sent = 0
            except OSError:
                return  # the caller is gone
            if sent == len(frame):
                return
            self._loop.add_writer(self._sock.fileno(), self._drain)
            frame = frame[sent:]
        self._outbox.append(memoryview(frame))
        self._queued += len(frame)

    def _drain(self) -> None:
        try:
            while self._outbox:
                sent = self._sock.send(self._outbox[0])
                self._queued -= sent
                if sent < len(self._outbox[0]):
                    self._outbox[0] = self._outbox[0][sent:]
                    return
                self._outbox.popleft()
        except BlockingIOError:
            return
        except OSError:
            self._outbox.clear()
        self._loop.remove_writer(self._sock.fileno())

    def _flush_blocking(self) -> None:
        if not self._outbox:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_writer(self._sock.fileno())
        self._sock.setblocking(True)
        try:
            while self._outbox:
                self._sock.sendall(self._outbox.popleft())
        except OSError:
            self._outbox.clear()
        self._queued = 0

    def detach(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._sock.fileno())
        self._flush_blocking()


class _ForwardingHandler(logging.Handler):
    """Sends each record of the server's interpreter to the caller's loggers of the same name."""

    def __init__(self, link: HostLink) -> None:
        super().__init__()
        self._link = link

    def emit(self, record: logging.LogRecord) -> None:
        fields = dict(record.__dict__)
        fields["msg"] = record.getMessage()
        fields["args"] = None
        if record.exc_info:
            fields["exc_text"] = self.formatter.formatException(record.exc_info) if self.formatter else logging.Formatter().formatException(record.exc_info)
        fields["exc_info"] = None
        self._link.event(Event.LOG, fields)


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = bytearray(count)
    view = memoryview(data)
    received = 0
    while received < count:
        n = sock.recv_into(view[received:])
        if n == 0:
            raise EOFError("the caller closed the host socket before its HOST_INIT was whole")
        received += n
    return bytes(data)


def serve_in_a_child_process(fd: int, parent_pid: int) -> None:
    """The server's side in a process of its own (``ProcessHost``): end with the caller's process,
    leave Ctrl+C to it, and serve. ``fd`` is this side of the host socket, inherited."""
    die_with_parent(parent_pid)
    # Ctrl+C in a terminal reaches the whole process group: the caller decides when to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve_in_this_interpreter(fd, own_thread_slice=True)


def serve_in_this_interpreter(fd: int, own_thread_slice: bool = False) -> None:
    """The server's side: read the ``HOST_INIT``, serve until stopped, say how it ended.

    Runs in the sub-interpreter, on the server thread (or in the server's process, on its main
    thread). ``fd`` is the caller's descriptor of this side's end of the host socket; like the
    listening sockets, it is used through a duplicate made and closed here, so the caller's side
    can always close its own. ``own_thread_slice``: lengthen this thread's time slice here (in a
    sub-interpreter the host thread has done it, with ctypes, which 3.12's isolated interpreters
    refuse).
    """
    sock = socket.socket(fileno=os.dup(fd))
    try:
        # Exactly the INIT frame: the caller's first calls may follow it at once, for the link.
        kind, length = HEADER.unpack(_recv_exactly(sock, HEADER.size))
        if kind != Kind.HOST_INIT:
            raise RuntimeError(f"the host socket began with frame kind {kind}, not HOST_INIT")
        init = pickle.loads(_recv_exactly(sock, length))
        sys.path[:] = init["sys_path"]
        recipe: ServerRecipe = init["recipe"]
        if own_thread_slice:
            lengthen_slice(recipe.slice_ms)
        link = HostLink(sock)
        serving = recipe.serving((lambda key, value: link.event(Event.LOG_ENTRY, (key, value))) if recipe.forwards_log else None)
        sockets = [socket.socket(fileno=os.dup(listen_fd)) for listen_fd in init["listen_fds"]]
        server_loop = ServerLoop(serving, sockets, recipe.url, recipe.control_secret, lambda: link.event(Event.STOP_REQUESTED, None, droppable=False))
        link.server_loop = server_loop
        handler = _ForwardingHandler(link)
        litkit_logger = logging.getLogger("litkit")
        litkit_logger.setLevel(init["log_level"])
        litkit_logger.addHandler(handler)
        litkit_logger.propagate = False  # this interpreter has no logging setup of its own to reach

        def on_started(future: concurrent.futures.Future[None]) -> None:
            error = future.exception()
            link.event(Event.STARTED, None if error is None else portable(error), droppable=False)

        server_loop.started.add_done_callback(on_started)
        try:
            server_loop.run(prepare=link.attach)
        finally:
            if link.dropped:
                logger.warning("%d log records and output lines of the workers were dropped: the caller did not read them in time", link.dropped)
            link.event(Event.FINAL, server_loop.snapshot("stopped"), droppable=False)
            litkit_logger.removeHandler(handler)
            link.detach()
    finally:
        sock.close()
