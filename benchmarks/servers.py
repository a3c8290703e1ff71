"""Start an app under test in its own process session, wait for its first 200, measure, stop it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import psutil

from systems import System

PROBES = {"echo": {"input": 1}, "tokens": {"n": 1}, "work": {"seconds": 0}}


class ServerError(RuntimeError):
    """An app under test failed to start or answered its readiness probe wrongly."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RunningApp:
    """One app process (and whatever it spawns), from launch to stop.

    Attributes set by ``start()``: ``ready_s`` (launch to the first 200 on ``/predict``, interpreter
    start-up and imports included) and ``serve_s`` (litkit only: what ``serve()`` itself took, as
    the app measured it).
    """

    def __init__(
        self, system: System, app: str, workers: int = 1, widget: str = "none", events: str | None = None, environ: dict[str, str] | None = None
    ) -> None:
        """``environ``: variables to set for the app besides its system's (e.g. ``LITKIT_SLICE_MS``)."""
        self.system, self.app, self.workers, self.widget = system, app, workers, widget
        self.environ = environ or {}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/predict"
        self.events = events
        self.ready_s = float("nan")
        self.serve_s: float | None = None
        self.widget_state: str | None = None
        self._output = tempfile.TemporaryFile(mode="w+")
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RunningApp:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 120.0) -> None:
        env = {**self.system.environment(), **self.environ}
        if self.events:
            env["BENCH_EVENTS"] = self.events
        command = [self.system.python, self.system.script, "--port", str(self.port), "--app", self.app, "--workers", str(self.workers), "--widget", self.widget]
        started = time.perf_counter()
        self._process = subprocess.Popen(command, stdout=self._output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        try:
            self._wait_for_first_200(started, timeout)
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.perf_counter() - started
        self._read_announcement()

    def _wait_for_first_200(self, started: float, timeout: float) -> None:
        body = json.dumps(PROBES[self.app])
        while True:
            if self._process is not None and self._process.poll() is not None:
                raise ServerError(f"{self.system.name} {self.app} exited with status {self._process.returncode} before serving:\n{self.output()[-3000:]}")
            if time.perf_counter() - started > timeout:
                raise ServerError(f"{self.system.name} {self.app} answered no 200 on {self.url} within {timeout} s:\n{self.output()[-3000:]}")
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                connection.request("POST", "/predict", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    return
            except (ConnectionError, OSError, http.client.HTTPException):
                pass
            finally:
                connection.close()
            time.sleep(0.005)

    def _read_announcement(self, timeout: float = 10.0) -> None:
        """litkit's app prints its ``serve()`` time just after the server is up: wait for that line."""
        if not self.system.announces:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.output().splitlines():
                if line.startswith("{") and "serve_s" in line:
                    announcement = json.loads(line)
                    self.serve_s = announcement["serve_s"]
                    self.widget_state = announcement.get("widget")
                    return
            time.sleep(0.005)
        raise ServerError(f"{self.system.name} served but printed no serve_s line within {timeout} s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        # pread, not seek and read: the app writes through the same open file, so they share one
        # offset, and a seek here made the app's next line land over earlier output.
        fd = self._output.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def processes(self) -> list[psutil.Process]:
        """The app's process first, then every process it spawned."""
        if self._process is None:
            return []
        root = psutil.Process(self._process.pid)
        return [root, *root.children(recursive=True)]

    def memory(self) -> list[dict[str, float | str]]:
        """RSS and USS (MiB) of every process of the app, the app's own process first."""
        rows = []
        for index, process in enumerate(self.processes()):
            try:
                info = process.memory_full_info()
                command = " ".join(process.cmdline())
            except psutil.Error:
                continue
            role = "serving process" if index == 0 else ("litkit worker" if "litkit.worker" in command else "child process")
            rows.append({"pid": process.pid, "role": role, "rss_mib": info.rss / 2**20, "uss_mib": info.uss / 2**20})
        return rows

    def stop(self) -> None:
        """SIGTERM the app; SIGKILL, by pid, whatever of its process tree is left after 5 s."""
        if self._process is None:
            return
        try:
            tree = self.processes()
        except psutil.NoSuchProcess:
            tree = []
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(tree, timeout=5)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        self._process.wait(timeout=5)  # reap it
        self._process = None
        self._output.close()
