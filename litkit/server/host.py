"""Where a server's loop runs, and the boundary between it and the ``Server`` the caller holds.

Three hosts with one face (``start``, ``started``, ``finished``, ``status``, ``cancel``, ``stop``,
``add_output_listener``, ``thread``):

- ``InterpreterHost`` (Python 3.13+, the default there): the server thread runs the
  ``ServerLoop`` inside a sub-interpreter of its own (``litkit.server.interpreters``), with a GIL
  of its own, so a notebook cell computing in pure Python, or sitting in one long C call that
  holds the caller's GIL, does not slow the endpoint. The sub-interpreter imports litkit's server
  side, never the user's code: it receives the endpoints' plans (the API as cloudpickled bytes,
  sent on to the workers unopened) and the listening sockets' descriptors. What crosses, over one
  socket pair (``HOST_*`` frames, ``litkit.wire.protocol``): the caller's calls (``status``,
  ``cancel``, ``stop``, ``listen_output``) and their replies; from the server, unasked: that it
  started (or the error that stopped it), its log records (re-emitted on the caller's loggers of
  the same names), the workers' output lines for listeners, and the final status. What stays on
  the caller's side: the ``Server`` object, the registry of servers and its re-run logic, the
  dashboard and the user's API object.
- ``ProcessHost`` (Python 3.10-3.12, the default there): the same boundary, the same frames, with
  the ``ServerLoop`` in a process of its own, a child of the caller's (``python -c`` running
  ``serve_in_a_child_process``), that ends with it (``PR_SET_PDEATHSIG``, and end of file on the
  host socket). These Pythons have no sub-interpreter with a GIL of its own, and a server on a
  thread shares the caller's: a busy cell then slows every request and each request slows the
  cell (docs/benchmarks.md, "A busy kernel").
- ``ThreadHost`` (``LITKIT_SUBINTERPRETER=0``, ``in_this_interpreter()``, an API whose hooks the
  server calls itself): the ``ServerLoop`` on a thread of the caller's interpreter, sharing its
  GIL, with a short switch interval while it runs (``litkit.server.switching``).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from typing import Any, Callable

import cloudpickle

from ..pool.logs import OutputListener
from ..worker.lifetime import die_with_parent
from ..wire.protocol import HEADER, FrameParser, Kind, MessageReader, encode_frame
from .endpoints import EndpointPlan, ServingState
from .interpreters import InterpreterFailed, borrowed
from .loop import ServerLoop
from .switching import ShortSwitchInterval

__all__ = ["InterpreterHost", "ProcessHost", "ServerRecipe", "ThreadHost", "caller_only", "serve_in_a_child_process", "serve_in_this_interpreter"]

logger = logging.getLogger("litkit.server")

_CALL_TIMEOUT_S = 5.0
# The loggers a server writes to; the sub-interpreter forwards records from the lowest level any
# of them has in the caller's interpreter when the server starts.
_LOGGERS = ("litkit.server", "litkit.server.access", "litkit.pool", "litkit.worker")
_OUTBOX_LIMIT = 1 << 20  # bytes of log and output events the server queues for a busy caller
_PROCESS_STOP_GRACE_S = 15.0  # past a stop's drain, before a server process that has not ended is killed


class ServerRecipe:
    """What a server's loop is made from: plain data, able to cross to another interpreter."""

    def __init__(
        self,
        plans: list[EndpointPlan],
        access: Any,
        client_timeout: float,
        slice_ms: float,
        url: str,
        control_secret: str,
        on_log: Callable[[str, Any], None] | None = None,
        root_text: str | None = None,
        openapi: bool = True,
    ) -> None:
        self.plans = plans
        self.root_text = root_text  # GET /'s answer to a client not asking for HTML (litkit.server.page)
        self.openapi = openapi  # False: no /openapi.json, and so no page
        self.control_secret = control_secret
        self.access = access
        self.client_timeout = client_timeout
        self.slice_ms = slice_ms
        self.url = url
        self.on_log = on_log  # the caller's: it stays on the caller's side
        self.forwards_log = on_log is not None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["on_log"] = None
        return state

    def caller_only(self) -> str | None:
        """Why this server must run in the caller's interpreter (None: it need not); see ``caller_only()``."""
        return caller_only(self.plans)

    def serving(self, on_log: Callable[[str, Any], None] | None, previous: ServingState | None = None) -> ServingState:
        """The server's state made from this recipe; ``previous``: the version it replaces (a re-run)."""
        serving = ServingState(
            self.plans, access=self.access, client_timeout=self.client_timeout, slice_ms=self.slice_ms, root_text=self.root_text, openapi=self.openapi, previous=previous
        )
        for endpoint in serving.endpoints:
            endpoint.pool.log_entries.on_log = on_log
        return serving


def caller_only(plans: list[EndpointPlan]) -> str | None:
    """Why a server of these endpoints must run in the caller's interpreter (None: it need not): an
    API hook that the server calls itself (LitServe's ``authorize`` and ``health``) runs on the API
    object, which only the caller's interpreter holds."""
    for plan in plans:
        if plan.authorize is not None:
            return f"{plan.api_name}.authorize() runs in the serving process, on the API object"
        if plan.health_hook is not None:
            return f"{plan.api_name}.health() runs in the serving process, on the API object"
    return None


def _lengthen_slice(slice_ms: float) -> None:
    from ..worker.timeslice import lengthen_slice  # ctypes: loaded on the server thread only

    lengthen_slice(slice_ms)  # not passed on to the workers it spawns


# -- on a thread of the caller's interpreter ------------------------------------------------------


class ThreadHost:
    """The server's loop on a thread of the caller's interpreter."""

    def __init__(self, recipe: ServerRecipe, sockets: list[socket.socket], name: str, request_stop: Callable[[], None]) -> None:
        self._slice_ms = recipe.slice_ms
        self.request_stop = request_stop  # the Server that holds this host now: a re-run hands it on
        self._server_loop = ServerLoop(recipe.serving(recipe.on_log), sockets, recipe.url, recipe.control_secret, lambda: self.request_stop())
        self.started = self._server_loop.started
        self.finished = self._server_loop.finished
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def serving(self) -> ServingState:
        """The version serving now, in this interpreter (``litkit.compat`` reads it)."""
        return self._server_loop.serving

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        _lengthen_slice(self._slice_ms)
        with ShortSwitchInterval():
            self._server_loop.run()

    def status(self, state: str) -> dict[str, Any]:
        return self._server_loop.call(lambda: self._server_loop.snapshot(state))

    def cancel(self, request_id: str, reason: str) -> bool:
        return self._server_loop.call(lambda: self._server_loop.cancel(request_id, reason))

    def stop(self, drain: float) -> None:
        self._server_loop.stop(drain)

    def replace(self, recipe: ServerRecipe) -> concurrent.futures.Future[None]:
        """Serve ``recipe``'s endpoints in place of the current ones, on the same listener
        (``ServerLoop.replace``); the future resolves once they take requests, or to the error
        that stopped their start."""
        return self._server_loop.replace(lambda current: recipe.serving(recipe.on_log, previous=current))

    def add_output_listener(self, listener: OutputListener) -> None:
        self._server_loop.call(lambda: self._server_loop.add_output_listener(listener))

    def remove_output_listener(self, listener: OutputListener) -> None:
        self._server_loop.call(lambda: self._server_loop.remove_output_listener(listener))


# -- in a sub-interpreter of its own: the caller's end --------------------------------------------


class InterpreterHost:
    """The server's loop in a sub-interpreter with its own GIL, run by a thread of the caller's."""

    def __init__(self, recipe: ServerRecipe, sockets: list[socket.socket], name: str, request_stop: Callable[[], None]) -> None:
        reason = recipe.caller_only()
        if reason is not None:
            raise ValueError(f"this server cannot run outside the caller's interpreter: {reason}")
        self._slice_ms = recipe.slice_ms
        self.request_stop = request_stop  # the Server that holds this host now: a re-run hands it on
        self._on_log = recipe.on_log
        # The server's interpreter works on duplicates of these descriptors, which it makes and
        # closes itself; this side closes the originals once that interpreter has ended.
        self._sockets = sockets
        self._own, self._theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        level = min(logging.getLogger(name).getEffectiveLevel() for name in _LOGGERS)
        listen_fds = [sock.fileno() for sock in sockets]
        self._init = encode_frame(Kind.HOST_INIT, cloudpickle.dumps({"recipe": recipe, "listen_fds": listen_fds, "log_level": level, "sys_path": list(sys.path)}))
        self._send_lock = threading.Lock()
        self._calls: dict[int, concurrent.futures.Future[Any]] = {}
        self._call_ids = itertools.count()
        self._listeners: list[OutputListener] = []
        self._final: dict[str, Any] | None = None  # the last status, sent as the loop ended
        self._last: dict[str, Any] | None = None  # the last status a call returned
        self._url = recipe.url
        self._ended: str | None = None  # why the server's interpreter or process ended without a stop
        self.started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._reader = threading.Thread(target=self._read, name=f"{name}-events", daemon=True)

    def start(self) -> None:
        self._reader.start()
        self.thread.start()
        try:
            with self._send_lock:  # the API's bytes can be large: sent once the other side reads
                self._own.sendall(self._init)
        except OSError:
            pass  # the server's interpreter ended before it read them: `started` says why
        self._init = b""

    _place = "interpreter"  # where the server runs, for messages

    def _run(self) -> None:
        """The host thread: serve elsewhere until stopped (``_serve``), then end this side."""
        try:
            self._serve()
        except BaseException as error:  # noqa: BLE001 - report to serve() instead of dying silently
            if not self.started.done():
                self.started.set_exception(error if isinstance(error, InterpreterFailed) else InterpreterFailed(f"{type(error).__name__}: {error}"))
            self._ended = f"the server's {self._place} ended without a stop ({error}); call litkit.serve(...) again"
            logger.error("the litkit server's %s failed: %s", self._place, error)
        finally:
            for sock in self._sockets:
                sock.close()
            self._theirs.close()  # with the server's copy closed too, the events thread reads end of file
            self._reader.join(_CALL_TIMEOUT_S)
            self._own.close()
            if not self.started.done():
                self.started.set_exception(InterpreterFailed(f"the server's {self._place} ended before the server started"))
            self.finished.set()
        if self._ended is not None and self.started.exception() is None:
            # It died serving (kill -9 of the server's process, say): the Server stops too, so it
            # says so, and withdraws its Jupyter route registration, which would otherwise relay
            # browsers (and their credentials) to whatever binds the freed port next (issue 25, bug 3).
            self.request_stop()

    def _serve(self) -> None:
        """Enter the sub-interpreter on this thread and serve there until stopped."""
        _lengthen_slice(self._slice_ms)
        # Given back when the server has stopped cleanly, for the next one (litkit.server.interpreters).
        with borrowed("from litkit.server.host import serve_in_this_interpreter") as interpreter:
            interpreter.run(f"serve_in_this_interpreter({self._theirs.fileno()})")

    def _read(self) -> None:
        """The events thread: replies to calls, and what the server says unasked."""
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
                    self._on_event(*pickle.loads(payload))
        except (EOFError, OSError):
            pass  # the server's interpreter closed its end: it has stopped
        finally:
            for future in list(self._calls.values()):
                if not future.done():
                    future.set_exception(EOFError("the server has stopped"))

    def _on_event(self, name: str, value: Any) -> None:
        if name == "started":
            if value is None:
                self.started.set_result(None)
            else:
                self.started.set_exception(value)
        elif name == "log":
            record = logging.makeLogRecord(value)
            target = logging.getLogger(record.name)
            if target.isEnabledFor(record.levelno):
                target.handle(record)
        elif name == "output":
            for listener in list(self._listeners):
                listener(*value)
        elif name == "final":
            self._final = value
        elif name == "stop_requested":  # the dashboard's Stop, over HTTP
            self.request_stop()
        elif name == "log_entry" and self._on_log is not None:  # a hook's self.log(key, value)
            self._on_log(*value)

    def _call(self, name: str, *arguments: Any, wait: bool = True) -> Any:
        future: concurrent.futures.Future[Any] | None = concurrent.futures.Future() if wait else None
        self._send_call(name, arguments, future)
        return future.result(_CALL_TIMEOUT_S) if future is not None else None

    def _send_call(self, name: str, arguments: tuple[Any, ...], future: concurrent.futures.Future[Any] | None) -> None:
        """Send one call; its reply, if ``future`` is given, resolves it (on the events thread).

        Raises:
            EOFError: the server has stopped.
        """
        call_id = next(self._call_ids)
        if future is not None:
            self._calls[call_id] = future
        # A recipe (replace) may hold classes of the caller's __main__: by value, as HOST_INIT.
        dumps = cloudpickle.dumps if name == "replace" else pickle.dumps
        try:
            with self._send_lock:
                self._own.sendall(encode_frame(Kind.HOST_CALL, dumps((call_id, name, arguments))))
        except OSError as error:
            self._calls.pop(call_id, None)
            raise EOFError("the server has stopped") from error

    def status(self, state: str) -> dict[str, Any]:
        if not self.finished.is_set():
            try:
                self._last = self._call("status", state)
                return self._last
            except EOFError:
                self.finished.wait(_CALL_TIMEOUT_S)  # it is ending: its final status is on its way
        if self._final is not None:
            return {**self._final, "state": state}
        # It ended without a final status (its process was killed): the last figures, and why.
        last = self._last or {"url": self._url, "workers": [], "counts": {}, "recent": [], "stats": {}, "logs": [], "endpoints": []}
        reason = self._ended or f"the server's {self._place} ended before it could report its status"
        return {**last, "state": state, "health": {"ok": False, "reason": reason}, "workers": []}

    def cancel(self, request_id: str, reason: str) -> bool:
        try:
            return bool(self._call("cancel", request_id, reason))
        except EOFError:
            return False  # stopped: nothing is in flight

    def stop(self, drain: float) -> None:
        try:
            self._call("stop", drain)
        except EOFError:
            pass  # stopped already
        except concurrent.futures.TimeoutError:
            logger.error("the litkit server's interpreter did not answer a stop within %.0fs", _CALL_TIMEOUT_S)

    def replace(self, recipe: ServerRecipe) -> concurrent.futures.Future[None]:
        """Serve ``recipe``'s endpoints in place of the current ones, on the same listener, in the
        same interpreter or process (``ServerLoop.replace``); the future resolves once they take
        requests, or to the error that stopped their start (``EOFError``: the server stopped)."""
        self._on_log = recipe.on_log
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            self._send_call("replace", (recipe,), future)
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
            self._call("listen_output", wait=False)

    def remove_output_listener(self, listener: OutputListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)  # the server may go on sending lines: nobody reads them


# -- in a process of its own: the caller's end ----------------------------------------------------


class ProcessHost(InterpreterHost):
    """The server's loop in a child process of its own, started and waited for by a thread of the
    caller's; calls, replies and events cross the same host socket as for a sub-interpreter."""

    process: subprocess.Popen[bytes] | None = None

    _place = "process"

    def _serve(self) -> None:
        """Start the server's process, and wait for it to end. The process dies with this thread
        (``PR_SET_PDEATHSIG``), which lives as long as the server.

        Raises:
            InterpreterFailed: the process exited with a code other than 0.
        """
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        code = (
            f"import sys; sys.path.insert(0, {package_root!r})\n"
            "from litkit.server.host import serve_in_a_child_process\n"
            f"serve_in_a_child_process({self._theirs.fileno()}, {os.getpid()})"
        )
        descriptors = (self._theirs.fileno(), *(sock.fileno() for sock in self._sockets))
        self.process = subprocess.Popen([sys.executable, "-c", code], pass_fds=descriptors, stdin=subprocess.DEVNULL)
        self._theirs.close()  # the process holds its own copy: its end closes when it exits
        returncode = self.process.wait()
        if returncode != 0:
            raise InterpreterFailed(f"the server's process exited with code {returncode}")

    def stop(self, drain: float) -> None:
        """Stop the server and wait for its process to end; kill it if it has not within
        ``drain`` + 15 s (its workers then die with it, by their own ``PR_SET_PDEATHSIG``)."""
        super().stop(drain)
        process = self.process
        if process is None:
            return
        try:
            process.wait(drain + _PROCESS_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            logger.error("the litkit server's process %d did not end within %.0fs of the stop; killing it", process.pid, drain + _PROCESS_STOP_GRACE_S)
            process.kill()
            process.wait()


# -- in a sub-interpreter of its own: the server's end --------------------------------------------


class _CallerLink:
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

    def _answer(self, call_id: int, name: str, arguments: tuple[Any, ...]) -> None:
        server_loop = self.server_loop
        try:
            if server_loop is None:
                raise RuntimeError("the server is not made yet")
            if name == "status":
                value: Any = server_loop.snapshot(*arguments)
            elif name == "cancel":
                value = server_loop.cancel(*arguments)
            elif name == "stop":
                server_loop.stop(*arguments)
                value = None
            elif name == "listen_output":
                server_loop.add_output_listener(lambda *line: self.event("output", line))
                value = None
            elif name == "replace":  # answered once the new version serves, or failed to start
                recipe: ServerRecipe = arguments[0]
                forward = (lambda key, value: self.event("log_entry", (key, value))) if recipe.forwards_log else None
                pending = server_loop.replace(lambda current: recipe.serving(forward, previous=current))
                pending.add_done_callback(lambda done: self._reply(call_id, done.exception() is None, done.exception()))
                return
            else:
                raise ValueError(f"unknown call {name!r} on the host socket")
            self._reply(call_id, True, value)
        except Exception as error:  # noqa: BLE001 - the caller raises it
            self._reply(call_id, False, error)

    def _reply(self, call_id: int, ok: bool, value: Any) -> None:
        reply = (call_id, ok, value if ok else _portable(value))
        self._send(encode_frame(Kind.HOST_REPLY, pickle.dumps(reply)), droppable=False)

    def event(self, name: str, value: Any, droppable: bool = True) -> None:
        try:
            payload = pickle.dumps((name, value))
        except Exception as error:  # noqa: BLE001 - an event that cannot cross says so instead
            payload = pickle.dumps((name, _portable(error)))
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

    def __init__(self, link: _CallerLink) -> None:
        super().__init__()
        self._link = link

    def emit(self, record: logging.LogRecord) -> None:
        fields = dict(record.__dict__)
        fields["msg"] = record.getMessage()
        fields["args"] = None
        if record.exc_info:
            fields["exc_text"] = self.formatter.formatException(record.exc_info) if self.formatter else logging.Formatter().formatException(record.exc_info)
        fields["exc_info"] = None
        self._link.event("log", fields)


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(error).__name__}: {error}")


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
            _lengthen_slice(recipe.slice_ms)
        link = _CallerLink(sock)
        serving = recipe.serving((lambda key, value: link.event("log_entry", (key, value))) if recipe.forwards_log else None)
        sockets = [socket.socket(fileno=os.dup(listen_fd)) for listen_fd in init["listen_fds"]]
        server_loop = ServerLoop(serving, sockets, recipe.url, recipe.control_secret, lambda: link.event("stop_requested", None, droppable=False))
        link.server_loop = server_loop
        handler = _ForwardingHandler(link)
        litkit_logger = logging.getLogger("litkit")
        litkit_logger.setLevel(init["log_level"])
        litkit_logger.addHandler(handler)
        litkit_logger.propagate = False  # this interpreter has no logging setup of its own to reach

        def on_started(future: concurrent.futures.Future[None]) -> None:
            error = future.exception()
            link.event("started", None if error is None else _portable(error), droppable=False)

        server_loop.started.add_done_callback(on_started)
        try:
            server_loop.run(prepare=link.attach)
        finally:
            if link.dropped:
                logger.warning("%d log records and output lines of the workers were dropped: the caller did not read them in time", link.dropped)
            link.event("final", server_loop.snapshot("stopped"), droppable=False)
            litkit_logger.removeHandler(handler)
            link.detach()
    finally:
        sock.close()
