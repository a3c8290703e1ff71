"""Shared fixtures: serve a test API on port 0 and prove nothing is left behind afterwards."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import cloudpickle
import psutil
import pytest

import apis
import litkit

cloudpickle.register_pickle_by_value(apis)

DEADLINE_S = 10.0


def wait_until(condition: Callable[[], Any], deadline_s: float = DEADLINE_S, message: str = "condition", interval: float = 0.005) -> Any:
    """Poll ``condition`` every ``interval`` seconds until it returns something truthy; fail the
    test past the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s}s waiting for {message}")
        time.sleep(interval)


STARTUP_PROGRESS = "litkit: starting "  # serve()'s line once setup() has run for a second (litkit.server.startup)


def without_startup_progress(lines: list[str]) -> list[str]:
    """``lines`` a process printed, less serve()'s progress lines: on a busy machine workers may
    take more than a second to start, and serve() then says so on stdout."""
    return [line for line in lines if not line.startswith(STARTUP_PROGRESS)]


def next_line_after_startup(stream: Any) -> str:
    """The next line of a process's ``stream`` that is not one of serve()'s progress lines."""
    while (line := stream.readline()).startswith(STARTUP_PROGRESS):
        pass
    return line


def assert_nothing_at_error(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing was logged at ERROR or above (by the server, re-emitted here from wherever it runs)."""
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def children() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def assert_no_children(deadline_s: float = 5.0) -> None:
    wait_until(lambda: not [p for p in children() if p.status() != psutil.STATUS_ZOMBIE], deadline_s, "child processes to exit")


def serving_pid(server: Any) -> int:
    """The process that runs ``server``'s loop: this one, or (Python 3.10-3.12) its own process."""
    process = getattr(server._host, "process", None)
    return os.getpid() if process is None else process.pid


def server_loop_thread_id(server: Any) -> int:
    """The native id of the thread that runs ``server``'s loop (in its own process: the main one)."""
    process = getattr(server._host, "process", None)
    return server._thread.native_id if process is None else process.pid


def litkit_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("litkit")]


class Events:
    """The event file the test APIs write to (see apis.record)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def read(self) -> list[dict[str, Any]]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as log:
            return [json.loads(line) for line in log if line.endswith("\n")]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.read() if e["event"] == event]

    def wait_for(self, event: str, count: int = 1, deadline_s: float = DEADLINE_S) -> list[dict[str, Any]]:
        return wait_until(lambda: (lambda found: found if len(found) >= count else None)(self.named(event)), deadline_s, f"{count} {event!r} event(s)")


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test() -> Iterator[None]:
    """A test that fails half-way must not leave its server running into the next test."""
    yield
    if litkit_threads():
        from litkit.server.registry import stop_all

        stop_all()
        pytest.fail(f"a test left a litkit server running: {litkit_threads()}")


@pytest.fixture
def events(tmp_path: Path) -> Events:
    return Events(tmp_path / "events.jsonl")


@pytest.fixture
def serve() -> Iterator[Callable[..., Any]]:
    """``serve(api, **options)`` on port 0; every server is stopped and checked for leftovers."""
    servers: list[Any] = []

    def start(api: litkit.LitAPI, **options: Any) -> Any:
        options.setdefault("port", 0)
        server = litkit.serve(api, **options)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    assert_no_children()
    assert not litkit_threads(), f"litkit threads left running: {litkit_threads()}"


def raw_post(url: str, body: bytes, headers: dict[str, str] | None = None, path: str = "/predict") -> socket.socket:
    """Send a POST on a plain socket and return the socket (to read from, or to close: a disconnect)."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=DEADLINE_S)
    head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    sock.sendall(head.encode() + b"\r\n" + body)
    return sock


class ChunkReader:
    """Reads a chunked HTTP response off a raw socket, line by line of the decoded body."""

    def __init__(self, sock: socket.socket | Any) -> None:
        # A file already made from the socket carries on where the previous response ended
        # (pipelined responses), without losing what it read ahead.
        self.file = sock if hasattr(sock, "readline") else sock.makefile("rb")
        self.status_line = self.file.readline().decode()
        self.headers: dict[str, str] = {}
        while (line := self.file.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._pending = b""

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def line(self) -> bytes:
        while b"\n" not in self._pending:
            size = int(self.file.readline().strip(), 16)
            if size == 0:
                raise EOFError("end of the chunked body")
            self._pending += self.file.read(size)
            self.file.readline()
        line, _, self._pending = self._pending.partition(b"\n")
        return line

    def body(self) -> bytes:
        """The whole body of a response sent with Content-Length (a non-streaming answer)."""
        return self.file.read(int(self.headers["content-length"]))

    def close(self) -> None:
        self.file.close()


def notebook_stdout_lines(nb: Any) -> list[str]:
    """What a notebook's code cells printed to stdout, line by line. One print can reach nbclient
    as several stream messages (the kernel flushes its buffer on a timer), so each cell's stdout is
    joined before it is split."""
    return [
        line for cell in nb.cells if cell.cell_type == "code"
        for line in "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == "stdout").splitlines()
    ]


def next_chunk(reader: ChunkReader) -> dict[str, Any]:
    """The next chunk of an NDJSON or SSE stream, as JSON (SSE's blank lines and comments skipped)."""
    while True:
        line = reader.line()
        if line.startswith(b"data: "):
            return json.loads(line[len(b"data: "):])
        if line.strip() and not line.startswith((b":", b"event:", b"id:")):
            return json.loads(line)


def hang_up_mid_stream(server: Any, events: Any, gate: str, read: int, headers: dict[str, str] | None = None) -> float:
    """Stream from a gated ``apis.Ticker``/``AsyncTicker`` (chunk n made once ``<gate><n>`` exists),
    read ``read`` chunks, hang up, wait until the server has counted the request cancelled, and only
    then open the gate of the next chunk; wait for the generator's ``finally``. Returns the
    monotonic time of the hang-up.

    So the generator makes its next chunk after the server saw the hang-up, whatever the machine's
    speed: the worker's write of it must fail and close the generator. How soon the server sees a
    hang-up is measured by the benchmark (``benchmarks/run.py``, cancellation at 1 and 20 ms)."""
    sock = raw_post(server.url, json.dumps({"gate": gate, "wait_s": DEADLINE_S}).encode(), headers)
    reader = ChunkReader(sock)
    try:
        assert reader.status == 200
        for i in range(read):
            assert next_chunk(reader) == {"i": i}
            if i + 1 < read:
                open(f"{gate}{i + 1}", "w").close()
    finally:
        reader.close()
        sock.close()
    hung_up = time.monotonic()
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the server to count the stream cancelled")
    open(f"{gate}{read}", "w").close()
    events.wait_for("finally")
    return hung_up


@pytest.fixture(scope="session")
def ray_serve() -> Iterator[str]:
    """One local Ray for every Ray test module (tests/ray, marked ray), with Serve's proxy on a free
    port; yields the proxy's base URL. Ray is imported here, only by the tests that ask for it."""
    import ray
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()
    assert_no_children(deadline_s=30)
