"""Where a server's loop runs, seen from the caller's side: the ``Host`` protocol the caller's
``Server`` uses, and the three hosts that implement it.

- ``InterpreterHost`` (Python 3.13+, the default there): the server thread runs the
  ``ServerLoop`` inside a sub-interpreter of its own (``litkit.server.interpreters``), with a GIL
  of its own, so a notebook cell computing in pure Python, or sitting in one long C call that
  holds the caller's GIL, does not slow the endpoint. The sub-interpreter imports litkit's server
  side, never the user's code: it receives the endpoints' plans (the API as cloudpickled bytes,
  sent on to the workers unopened) and the listening sockets' descriptors.
- ``ProcessHost`` (Python 3.10-3.12, the default there): the same boundary, the same frames, with
  the ``ServerLoop`` in a process of its own, a child of the caller's (``python -c`` running
  ``serve_in_a_child_process``), that ends with it (``PR_SET_PDEATHSIG``, and end of file on the
  host socket). These Pythons have no sub-interpreter with a GIL of its own, and a server on a
  thread shares the caller's: a busy cell then slows every request and each request slows the
  cell (docs/benchmarks.md, "A busy kernel").
- ``ThreadHost`` (``LITKIT_SUBINTERPRETER=0``, ``in_this_interpreter()``, an API whose hooks the
  server calls itself): the ``ServerLoop`` on a thread of the caller's interpreter, sharing its
  GIL, with a short switch interval while it runs (``litkit.server.switching``).

The first two are one ``SocketHost`` (the caller's end of the host socket, ``litkit.server.host_caller``)
composed with where the server's side runs (``_InSubInterpreter`` or ``_InChildProcess`` here). What crosses the host socket
(the recipe, the named ``Call`` and ``Event`` kinds) is ``litkit.server.host_boundary``'s; the
server's end, which runs in the sub-interpreter or the process, is ``litkit.server.host_server``.
What stays on the caller's side: the ``Server`` object, the registry of servers and its re-run
logic, the dashboard and the user's API object.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import socket
import subprocess
import sys
import threading
from typing import Any, Callable, Protocol

from ..pool.logs import OutputListener
from .endpoints import ServingState
from .host_boundary import ServerRecipe, caller_only, lengthen_slice
from .host_caller import SocketHost
from .interpreters import InterpreterFailed, borrowed
from .loop import ServerLoop
from .switching import ShortSwitchInterval

__all__ = ["Host", "InterpreterHost", "ProcessHost", "ServerRecipe", "ThreadHost", "caller_only"]

logger = logging.getLogger("litkit.server")

# The loggers a server writes to; its sub-interpreter or process forwards records from the lowest
# level any of them has in the caller's interpreter when the server starts.
_LOGGERS = ("litkit.server", "litkit.server.access", "litkit.pool", "litkit.worker")
_PROCESS_STOP_GRACE_S = 15.0  # past a stop's drain, before a server process that has not ended is killed


class Host(Protocol):
    """Where a server's loop runs, as the caller's ``Server`` uses it (one face for the three hosts)."""

    started: concurrent.futures.Future[None]  # resolves once the server serves, or to the error that stopped its start
    finished: threading.Event  # set once the server's loop has ended, and this side with it
    thread: threading.Thread  # the caller's thread that runs the loop, or waits for the place it runs in
    request_stop: Callable[[], None]  # the Server holding this host now (a re-run hands it on); called when the server stops itself

    def __init__(self, recipe: ServerRecipe, sockets: list[socket.socket], name: str, request_stop: Callable[[], None]) -> None:
        """``sockets``: the listening sockets, closed by the host once its server has ended;
        ``name``: its thread's."""

    def start(self) -> None:
        """Start serving; ``started`` says when it does."""

    def status(self, state: str) -> dict[str, Any]:
        """The status snapshot (``Server.status()``), with ``state``, the ``Server``'s; once the
        server has ended, its last figures and why."""

    def cancel(self, request_id: str, reason: str) -> bool:
        """End the request ``request_id`` from the server's side; False if none has that id."""

    def stop(self, drain: float) -> None:
        """Stop the server, giving requests in flight ``drain`` seconds."""

    def replace(self, recipe: ServerRecipe) -> concurrent.futures.Future[None]:
        """Serve ``recipe``'s endpoints in place of the current ones, on the same listener; the
        future resolves once they take requests, or to the error that stopped their start."""

    def add_output_listener(self, listener: OutputListener) -> None:
        """Call ``listener(worker_id, stream, line)`` for each line the workers print from now on."""

    def remove_output_listener(self, listener: OutputListener) -> None:
        """Stop calling ``listener``."""


# -- on a thread of the caller's interpreter ------------------------------------------------------


class ThreadHost:
    """The server's loop on a thread of the caller's interpreter."""

    def __init__(self, recipe: ServerRecipe, sockets: list[socket.socket], name: str, request_stop: Callable[[], None]) -> None:
        self._slice_ms = recipe.slice_ms
        self.request_stop = request_stop
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
        lengthen_slice(self._slice_ms)
        with ShortSwitchInterval():
            self._server_loop.run()

    def status(self, state: str) -> dict[str, Any]:
        return self._server_loop.call(lambda: self._server_loop.snapshot(state))

    def cancel(self, request_id: str, reason: str) -> bool:
        return self._server_loop.call(lambda: self._server_loop.cancel(request_id, reason))

    def stop(self, drain: float) -> None:
        self._server_loop.stop(drain)

    def replace(self, recipe: ServerRecipe) -> concurrent.futures.Future[None]:
        """Serve ``recipe``'s endpoints in place of the current ones (``ServerLoop.replace``)."""
        return self._server_loop.replace(lambda current: recipe.serving(recipe.on_log, previous=current))

    def add_output_listener(self, listener: OutputListener) -> None:
        self._server_loop.call(lambda: self._server_loop.add_output_listener(listener))

    def remove_output_listener(self, listener: OutputListener) -> None:
        self._server_loop.call(lambda: self._server_loop.remove_output_listener(listener))


# -- elsewhere: in a sub-interpreter, or in a process of its own ---------------------------------


class _InSubInterpreter:
    """The server's side in a sub-interpreter with its own GIL, run by the host thread."""

    place = "interpreter"

    def __init__(self, slice_ms: float) -> None:
        self._slice_ms = slice_ms

    def serve(self, theirs: socket.socket, sockets: list[socket.socket]) -> None:
        """Enter the sub-interpreter on this thread and serve there until stopped (it duplicates
        the listening sockets from their descriptors, sent in the ``HOST_INIT``)."""
        lengthen_slice(self._slice_ms)
        # Given back when the server has stopped cleanly, for the next one (litkit.server.interpreters).
        with borrowed("from litkit.server.host_server import serve_in_this_interpreter") as interpreter:
            interpreter.run(f"serve_in_this_interpreter({theirs.fileno()})")

    def stopped(self, drain: float) -> None:
        pass  # the host thread ends with the interpreter's run


class _InChildProcess:
    """The server's side in a child process of its own, started and waited for by the host thread."""

    place = "process"

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None

    def serve(self, theirs: socket.socket, sockets: list[socket.socket]) -> None:
        """Start the server's process, and wait for it to end. The process dies with this thread
        (``PR_SET_PDEATHSIG``), which lives as long as the server.

        Raises:
            InterpreterFailed: the process exited with a code other than 0.
        """
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        code = (
            f"import sys; sys.path.insert(0, {package_root!r})\n"
            "from litkit.server.host_server import serve_in_a_child_process\n"
            f"serve_in_a_child_process({theirs.fileno()}, {os.getpid()})"
        )
        descriptors = (theirs.fileno(), *(sock.fileno() for sock in sockets))
        self.process = subprocess.Popen([sys.executable, "-c", code], pass_fds=descriptors, stdin=subprocess.DEVNULL)
        theirs.close()  # the process holds its own copy: its end closes when it exits
        returncode = self.process.wait()
        if returncode != 0:
            raise InterpreterFailed(f"the server's process exited with code {returncode}")

    def stopped(self, drain: float) -> None:
        """Wait for the server's process to end; kill it if it has not within ``drain`` + 15 s (its
        workers then die with it, by their own ``PR_SET_PDEATHSIG``)."""
        process = self.process
        if process is None:
            return
        try:
            process.wait(drain + _PROCESS_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            logger.error("the litkit server's process %d did not end within %.0fs of the stop; killing it", process.pid, drain + _PROCESS_STOP_GRACE_S)
            process.kill()
            process.wait()


class InterpreterHost(SocketHost):
    """The server's loop in a sub-interpreter with its own GIL, run by a thread of the caller's."""

    def __init__(self, recipe: ServerRecipe, sockets: list[socket.socket], name: str, request_stop: Callable[[], None]) -> None:
        super().__init__(recipe, sockets, name, request_stop, _InSubInterpreter(recipe.slice_ms), _forwarded_level())


class ProcessHost(SocketHost):
    """The server's loop in a child process of its own, started and waited for by a thread of the caller's."""

    def __init__(self, recipe: ServerRecipe, sockets: list[socket.socket], name: str, request_stop: Callable[[], None]) -> None:
        self._child = _InChildProcess()
        super().__init__(recipe, sockets, name, request_stop, self._child, _forwarded_level())

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The server's process, once started."""
        return self._child.process


def _forwarded_level() -> int:
    """The lowest level any of ``_LOGGERS`` has in this interpreter now."""
    return min(logging.getLogger(name).getEffectiveLevel() for name in _LOGGERS)
