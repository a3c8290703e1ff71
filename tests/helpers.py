"""Run a litkit server as a subprocess, as a user would, and watch it with deadlines.

``running([...])`` starts the command with stdout and stderr piped, reads both without blocking,
and always ends the process (by its pid) and closes its pipes on the way out. Every wait here polls
a condition against a deadline.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from typing import Iterator, Sequence

import psutil

# "litkit: serving EchoAPI at http://127.0.0.1:PORT/predict (Ctrl+C to stop)" from litkit.run();
# "litkit: serving EchoAPI at http://127.0.0.1:PORT/predict (JSON)" from the litkit command.
BANNER = re.compile(r"^litkit: serving (?P<api>\w+) at (?P<endpoint>http://\S+) \(.*\)$", re.MULTILINE)
STOPPED = "litkit: stopped"

START_TIMEOUT_S = 30.0  # the server process and its workers are fresh interpreters; 2 slow cores
STOP_TIMEOUT_S = 15.0
# After the server exits, its workers must be gone within this. The server reaps them before it
# exits; regression: an interrupted Thread.join (CPython gh-90882) made stop() skip that, and the
# workers outlived the server by about a second.
GONE_TIMEOUT_S = 0.5
HTTP_TIMEOUT_S = 10.0


def litkit_command() -> list[str]:
    """The installed ``litkit`` console command: the one next to this interpreter, else ``python -m litkit``."""
    script = os.path.join(os.path.dirname(sys.executable), "litkit")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "litkit"]


class ServerProcess:
    """A subprocess whose stdout and stderr are collected as they come, read with deadlines."""

    def __init__(self, args: Sequence[str], cwd: str | os.PathLike[str] | None = None) -> None:
        self.args = list(args)
        self._out = bytearray()
        self._err = bytearray()
        self.seen: dict[int, psutil.Process] = {}  # every descendant ever recorded, by pid
        self.exited_at: float | None = None  # time.monotonic() when the process was seen to exit
        with _sigint_not_ignored():
            self.proc = subprocess.Popen(
                self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd
            )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.proc.stdout.fileno(), selectors.EVENT_READ, self._out)
        self._selector.register(self.proc.stderr.fileno(), selectors.EVENT_READ, self._err)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stdout(self) -> str:
        self._pump(0)
        return self._out.decode(errors="replace")

    @property
    def stderr(self) -> str:
        self._pump(0)
        return self._err.decode(errors="replace")

    def describe(self) -> str:
        return f"command: {self.args}\nexit code: {self.proc.poll()}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"

    # -- reading output -----------------------------------------------------------------------------

    def _pump(self, timeout: float) -> bool:
        """Read whatever output is available, waiting at most ``timeout`` seconds for some.

        Returns whether anything was ready (data or end of file).
        """
        if not self._selector.get_map():
            return False  # both pipes reached end of file
        ready = self._selector.select(timeout)
        for key, _events in ready:
            data = os.read(key.fd, 65536)
            if data:
                key.data.extend(data)
            else:
                self._selector.unregister(key.fd)
        return bool(ready)

    def _drain(self, timeout: float) -> None:
        """Read until the pipes are at end of file, or nothing more comes within ``timeout``."""
        while self._pump(timeout):
            pass

    @property
    def _eof(self) -> bool:
        return not self._selector.get_map()

    def wait_for_output(self, pattern: str | re.Pattern[str], timeout: float = START_TIMEOUT_S) -> re.Match[str]:
        """Wait until stdout matches ``pattern``; fail with all output if it does not in time."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self._out.decode(errors="replace"))
            if match:
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._eof:
                raise AssertionError(f"stdout never matched {regex.pattern!r} within {timeout:g}s\n{self.describe()}")
            self._pump(min(remaining, 0.5))

    def wait_for_banner(self, timeout: float = START_TIMEOUT_S) -> str:
        """Wait for the "litkit: serving ... at URL (...)" line; return the endpoint URL in it."""
        return self.wait_for_output(BANNER, timeout)["endpoint"]

    # -- processes ---------------------------------------------------------------------------------

    def record_children(self) -> list[psutil.Process]:
        """The process's descendants right now (all are remembered in ``seen``)."""
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in children:
            self.seen.setdefault(child.pid, child)
        return children

    def stop(self, sig: int = signal.SIGINT, timeout: float = STOP_TIMEOUT_S) -> int:
        """Send ``sig``, wait for the process to exit and for both pipes to close; return the exit code."""
        self.proc.send_signal(sig)
        return self.wait_for_exit(timeout, f"of {signal.Signals(sig).name}")

    def wait_for_exit(self, timeout: float = STOP_TIMEOUT_S, after: str = "") -> int:
        """Wait for the process to exit and read what it wrote; return the exit code."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the process did not exit within {timeout:g}s {after}\n{self.describe()}")
            self._pump(0.05)
        self.exited_at = time.monotonic()
        # Everything the process wrote is in the pipes now; a process it left behind may hold
        # them open, so take what is there without waiting for end of file.
        self._drain(0)
        return self.proc.returncode

    def assert_descendants_gone(self, timeout: float = GONE_TIMEOUT_S) -> None:
        """Every descendant ever recorded has exited within ``timeout`` of the process's own exit
        (psutil checks pid and start time, so a reused pid does not count)."""
        assert self.exited_at is not None, "call stop() or wait_for_exit() first"
        remaining = max(0.0, self.exited_at + timeout - time.monotonic())
        _gone, alive = psutil.wait_procs(list(self.seen.values()), timeout=remaining)
        assert not alive, f"processes left behind {timeout:g}s after the server exited: {alive}\n{self.describe()}"
        self._drain(0.5)  # the last words of those processes, e.g. a worker's print in a finally

    def close(self) -> None:
        """Kill the process if it still runs (and any recorded descendant), reap it, close the pipes."""
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        finally:
            for child in self.seen.values():
                with contextlib.suppress(psutil.Error):
                    child.kill()  # psutil checks it is still the same process before signalling it
            self._selector.close()
            self.proc.stdout.close()  # type: ignore[union-attr]
            self.proc.stderr.close()  # type: ignore[union-attr]


def assert_clean_stop(server: ServerProcess, sig: int = signal.SIGINT, worker_tracebacks: int = 0) -> None:
    """``sig`` (Ctrl+C by default) ends the server with exit code 0 and "litkit: stopped", without a
    traceback (but the ``worker_tracebacks`` of failed setups the test caused, each printed as a
    worker's), and every process it started is gone within GONE_TIMEOUT_S of its exit."""
    server.record_children()
    code = server.stop(sig)
    assert code == 0, f"exit code {code} after {signal.Signals(sig).name}\n{server.describe()}"
    assert server.stdout.rstrip().endswith(STOPPED), server.describe()
    assert server.stderr.count("Traceback from the worker process:") == worker_tracebacks, server.describe()
    assert server.stderr.count("Traceback") == 2 * worker_tracebacks, server.describe()
    server.assert_descendants_gone()


@contextlib.contextmanager
def running(args: Sequence[str], cwd: str | os.PathLike[str] | None = None) -> Iterator[ServerProcess]:
    """Start ``args``; whatever happens in the block, the process is ended, reaped, and its pipes closed."""
    server = ServerProcess(args, cwd=cwd)
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def _sigint_not_ignored() -> Iterator[None]:
    """Make sure the child does not inherit an ignored SIGINT.

    A shell runs background jobs with SIGINT ignored, and an ignored signal stays ignored across
    exec, so a test run started with ``pytest &`` would otherwise start servers that SIGINT cannot
    stop. A Python-level handler in this process is reset to the default in the child.
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
