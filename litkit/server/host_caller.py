"""The caller's end of the host socket (``SocketHost``): the server's loop runs elsewhere, in a
sub-interpreter or a process of its own (``litkit.server.host``'s ``InterpreterHost`` and
``ProcessHost``, which say where), and the caller's ``Server`` reaches it by named calls, answered
by replies, while the server's side sends named events unasked (``litkit.server.host_boundary``).

Two threads of the caller's: the host thread runs (or waits for) the server's side; the events
thread reads replies and events, dispatched by a table.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import pickle
import socket
import sys
import threading
from typing import Any, Callable, Protocol

import cloudpickle

from ..pool.logs import OutputListener
from ..wire.protocol import Kind, MessageReader, encode_frame
from .host_boundary import Call, Event, ServerRecipe
from .interpreters import InterpreterFailed

__all__ = ["Elsewhere", "SocketHost"]

logger = logging.getLogger("litkit.server")

_CALL_TIMEOUT_S = 5.0


class Elsewhere(Protocol):
    """Where a ``SocketHost`` runs the server's side (``litkit.server.host_server``)."""

    place: str  # for messages: "interpreter" or "process"

    def serve(self, theirs: socket.socket, sockets: list[socket.socket]) -> None:
        """Run the server's side, given its end of the host socket and the listening sockets, until
        it ends; raise ``InterpreterFailed`` if it failed."""

    def stopped(self, drain: float) -> None:
        """After a stop call: wait for the server's side to end, if it must be waited for."""


class SocketHost:
    """The server's loop elsewhere (``Elsewhere``), run or waited for by a thread of the caller's;
    calls, replies and events cross the host socket."""

    def __init__(
        self, recipe: ServerRecipe, sockets: list[socket.socket], name: str, request_stop: Callable[[], None], where: Elsewhere, log_level: int
    ) -> None:
        """``log_level``: the lowest level the server's side forwards log records from."""
        reason = recipe.caller_only()
        if reason is not None:
            raise ValueError(f"this server cannot run outside the caller's interpreter: {reason}")
        self._where = where
        self.request_stop = request_stop
        self._on_log = recipe.on_log
        # The server's side works on duplicates of these descriptors, which it makes and closes
        # itself; this side closes the originals once that side has ended.
        self._sockets = sockets
        self._own, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        listen_fds = [sock.fileno() for sock in sockets]
        init = {"recipe": recipe, "listen_fds": listen_fds, "log_level": log_level, "sys_path": list(sys.path)}
        self._init = encode_frame(Kind.HOST_INIT, cloudpickle.dumps(init))
        self._send_lock = threading.Lock()
        self._calls: dict[int, concurrent.futures.Future[Any]] = {}
        self._call_ids = itertools.count()
        self._listeners: list[OutputListener] = []
        self._final: dict[str, Any] | None = None  # the last status, sent as the loop ended
        self._last: dict[str, Any] | None = None  # the last status a call returned
        self._url = recipe.url
        self._ended: str | None = None  # why the server's side ended without a stop
        self.started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._reader = threading.Thread(target=self._read, name=f"{name}-events", daemon=True)
        self._events: dict[Event, Callable[[Any], None]] = {
            Event.STARTED: self._on_started,
            Event.LOG: _relog,
            Event.OUTPUT: self._on_output,
            Event.FINAL: self._on_final,
            Event.STOP_REQUESTED: lambda _: self.request_stop(),
            Event.LOG_ENTRY: self._on_log_entry,
        }

    def start(self) -> None:
        self._reader.start()
        self.thread.start()
        try:
            with self._send_lock:  # the API's bytes can be large: sent once the other side reads
                self._own.sendall(self._init)
        except OSError:
            pass  # the server's side ended before it read them: `started` says why
        self._init = b""

    def _run(self) -> None:
        """The host thread: serve elsewhere until stopped, then end this side."""
        place = self._where.place
        try:
            self._where.serve(self._theirs, self._sockets)
        except BaseException as error:  # noqa: BLE001 - report to serve() instead of dying silently
            if not self.started.done():
                self.started.set_exception(error if isinstance(error, InterpreterFailed) else InterpreterFailed(f"{type(error).__name__}: {error}"))
            self._ended = f"the server's {place} ended without a stop ({error}); call litkit.serve(...) again"
            logger.error("the litkit server's %s failed: %s", place, error)
        finally:
            for sock in self._sockets:
                sock.close()
            self._theirs.close()  # with the server's copy closed too, the events thread reads end of file
            self._reader.join(_CALL_TIMEOUT_S)
            self._own.close()
            if not self.started.done():
                self.started.set_exception(InterpreterFailed(f"the server's {place} ended before the server started"))
            self.finished.set()
        if self._ended is not None and self.started.exception() is None:
            # It died serving (kill -9 of the server's process, say): the Server stops too, so it
            # says so, and withdraws its Jupyter route registration, which would otherwise relay
            # browsers (and their credentials) to whatever binds the freed port next (issue 25, bug 3).
            self.request_stop()

    # -- what the server's side sends: replies and events, on the events thread --

    def _read(self) -> None:
        reader = MessageReader(self._own)
        try:
            while True:
                kind, payload, _ = reader.recv()
                if kind == Kind.HOST_REPLY:
                    call_id, ok, value = pickle.loads(payload)
                    future = self._calls.pop(call_id, None)
                    if future is not None:
                        future.set_result(value) if ok else future.set_exception(value)
                elif kind == Kind.HOST_EVENT:
                    event, value = pickle.loads(payload)
                    self._events[event](value)
        except (EOFError, OSError):
            pass  # the server's side closed its end: it has stopped
        finally:
            for future in list(self._calls.values()):
                if not future.done():
                    future.set_exception(EOFError("the server has stopped"))

    def _on_started(self, error: BaseException | None) -> None:
        if error is None:
            self.started.set_result(None)
        else:
            self.started.set_exception(error)

    def _on_output(self, line: tuple[int, str, str]) -> None:
        for listener in list(self._listeners):
            listener(*line)

    def _on_final(self, status: dict[str, Any]) -> None:
        self._final = status

    def _on_log_entry(self, entry: tuple[str, Any]) -> None:
        if self._on_log is not None:  # a hook's self.log(key, value)
            self._on_log(*entry)

    # -- calls --

    def _call(self, call: Call, *arguments: Any, wait: bool = True) -> Any:
        future: concurrent.futures.Future[Any] | None = concurrent.futures.Future() if wait else None
        self._send_call(call, arguments, future)
        return future.result(_CALL_TIMEOUT_S) if future is not None else None

    def _send_call(self, call: Call, arguments: tuple[Any, ...], future: concurrent.futures.Future[Any] | None) -> None:
        """Send one call; its reply, if ``future`` is given, resolves it (on the events thread).

        Raises:
            EOFError: the server has stopped.
        """
        call_id = next(self._call_ids)
        if future is not None:
            self._calls[call_id] = future
        # A recipe (REPLACE) may hold classes of the caller's __main__: by value, as HOST_INIT.
        dumps = cloudpickle.dumps if call is Call.REPLACE else pickle.dumps
        try:
            with self._send_lock:
                self._own.sendall(encode_frame(Kind.HOST_CALL, dumps((call_id, call, arguments))))
        except OSError as error:
            self._calls.pop(call_id, None)
            raise EOFError("the server has stopped") from error

    def status(self, state: str) -> dict[str, Any]:
        if not self.finished.is_set():
            try:
                self._last = self._call(Call.STATUS, state)
                return self._last
            except EOFError:
                self.finished.wait(_CALL_TIMEOUT_S)  # it is ending: its final status is on its way
        if self._final is not None:
            return {**self._final, "state": state}
        # It ended without a final status (its process was killed): the last figures, and why.
        last = self._last or {"url": self._url, "workers": [], "counts": {}, "recent": [], "stats": {}, "logs": [], "endpoints": []}
        reason = self._ended or f"the server's {self._where.place} ended before it could report its status"
        return {**last, "state": state, "health": {"ok": False, "reason": reason}, "workers": []}

    def cancel(self, request_id: str, reason: str) -> bool:
        try:
            return bool(self._call(Call.CANCEL, request_id, reason))
        except EOFError:
            return False  # stopped: nothing is in flight

    def stop(self, drain: float) -> None:
        try:
            self._call(Call.STOP, drain)
        except EOFError:
            pass  # stopped already
        except concurrent.futures.TimeoutError:
            logger.error("the litkit server's %s did not answer a stop within %.0fs", self._where.place, _CALL_TIMEOUT_S)
        self._where.stopped(drain)

    def replace(self, recipe: ServerRecipe) -> concurrent.futures.Future[None]:
        """Serve ``recipe``'s endpoints in place of the current ones, on the same listener, in the
        same interpreter or process (``ServerLoop.replace``); the future resolves once they take
        requests, or to the error that stopped their start (``EOFError``: the server stopped)."""
        self._on_log = recipe.on_log
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            self._send_call(Call.REPLACE, (recipe,), future)
        except EOFError as error:
            future.set_exception(error)
        return future

    def add_output_listener(self, listener: OutputListener) -> None:
        """From now on, ``listener`` gets the workers' lines on the events thread. Asking the
        server to send them does not wait for its answer: serve() adds one before the server's
        loop runs, which reads the request before any worker starts."""
        if listener in self._listeners:
            return  # a re-run's Server adds what the one before it had
        first = not self._listeners
        self._listeners.append(listener)
        if first:
            self._call(Call.LISTEN_OUTPUT, wait=False)

    def remove_output_listener(self, listener: OutputListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)  # the server may go on sending lines: nobody reads them


def _relog(fields: dict[str, Any]) -> None:
    """A log record of the server's side, re-emitted on the caller's logger of the same name."""
    record = logging.makeLogRecord(fields)
    target = logging.getLogger(record.name)
    if target.isEnabledFor(record.levelno):
        target.handle(record)
