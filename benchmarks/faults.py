"""Figures for docs/reliability.md: how fast litkit reacts to each fault, measured on this machine.

    python benchmarks/faults.py [--runs 5]

Prints one line per figure: min / median / max over the runs. The soak figures come from
``benchmarks/soak.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Callable

import psutil

import litkit


class Crasher(litkit.LitAPI):
    def predict(self, x):
        import ctypes

        if x.get("crash") == "segv":
            ctypes.string_at(0)
        if x.get("crash") == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if x.get("crash") == "exit":
            os._exit(3)
        if x.get("regex"):  # tens of seconds inside C with the GIL held: no thread of the worker runs
            import re

            return {"match": bool(re.match(r"(a+)+$", "a" * 30 + "b"))}
        if x.get("seconds"):  # a hook that never yields nor checks litkit.cancelled()
            deadline = time.monotonic() + x["seconds"]
            while time.monotonic() < deadline:
                time.sleep(0.01)
        return {"pid": os.getpid()}


class Firehose(litkit.LitAPI):
    def predict(self, x):
        chunk = "x" * (x["size"] - 1)
        for _ in range(x["count"]):
            yield chunk


def _post(url: str, body: dict) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    data = json.dumps(body).encode()
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
    return sock


def _status_line(sock: socket.socket) -> int:
    return int(sock.makefile("rb").readline().split()[1])


def _wait(condition: Callable[[], bool], deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.002)


def crash_figures(server: litkit.Server, how: str) -> tuple[float, float]:
    """(seconds from the request to its 500, seconds from the 500 until the replacement is idle)."""
    restarts = sum(w["restarts"] for w in server.status()["workers"])
    started = time.monotonic()
    sock = _post(server.url, {"crash": how})
    status = _status_line(sock)
    answered = time.monotonic()
    sock.close()
    if status != 500:
        raise RuntimeError(f"expected 500, got {status}")
    _wait(lambda: (lambda s: sum(w["restarts"] for w in s["workers"]) > restarts and all(w["state"] == "idle" for w in s["workers"]))(server.status()))
    return answered - started, time.monotonic() - answered


def grace_kill_figure(server: litkit.Server) -> float:
    """Seconds from a client's hang-up to the kill of a worker that ignores cancellation."""

    def killed() -> int:
        return sum(w["killed"] for w in server.status()["workers"])

    before = killed()
    sock = _post(server.url, {"seconds": 60})
    _wait(lambda: server.status()["counts"]["running"] == 1)
    sock.close()
    hung_up = time.monotonic()
    _wait(lambda: killed() > before)
    seconds = time.monotonic() - hung_up
    _wait(lambda: all(w["state"] == "idle" for w in server.status()["workers"]))
    return seconds


def orphan_figure(busy_with: dict | None = None) -> float:
    """Seconds from kill -9 of a serving process (one busy worker, one idle) until both workers are
    gone; the busy one runs ``busy_with`` (default: a Python loop of sleeps)."""
    script = textwrap.dedent(
        f"""
        import json, sys, time
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import cloudpickle, faults, litkit
        cloudpickle.register_pickle_by_value(faults)
        server = litkit.serve(faults.Crasher(), port=0, workers=2)
        print(json.dumps({{"url": server.url, "pids": [w["pid"] for w in server.status()["workers"]]}}), flush=True)
        time.sleep(120)
        """
    )
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as file:
        file.write(script)
    process = subprocess.Popen([sys.executable, file.name], stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(process.stdout.readline())  # type: ignore[union-attr]
        busy = _post(ready["url"], busy_with or {"seconds": 60})
        time.sleep(0.2)
        workers = [psutil.Process(pid) for pid in ready["pids"]]
        process.kill()
        killed = time.monotonic()

        def gone() -> bool:
            for worker in workers:
                try:
                    if worker.status() != psutil.STATUS_ZOMBIE:
                        return False
                except psutil.NoSuchProcess:
                    pass
            return True

        _wait(gone, 10)
        busy.close()
        return time.monotonic() - killed
    finally:
        process.kill()
        process.wait()
        process.stdout.close()  # type: ignore[union-attr]
        os.unlink(file.name)


def stalled_reader_figure(client_timeout: float) -> tuple[float, float]:
    """(MB sent to the socket for a client that reads nothing, seconds until it is cancelled)."""
    with litkit.serve(Firehose(), port=0, client_timeout=client_timeout) as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        sock = socket.socket()
        sock.connect((host, int(port)))
        data = json.dumps({"size": 65536, "count": 100_000}).encode()
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s" % (len(data), data))
        sock.recv(100)
        started = time.monotonic()
        _wait(lambda: server.status()["recent"][0]["state"] == "cancelled")
        seconds = time.monotonic() - started
        chunks = server.status()["recent"][0]["chunks"]
        sock.close()
        return chunks * 65536 / 1e6, seconds


def slowloris_figure(server: litkit.Server) -> float:
    """Seconds until a client sending one header byte every 50 ms is closed."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(0.05)
    started = time.monotonic()
    try:
        for byte in b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n" * 100:
            sock.sendall(bytes([byte]))
            try:
                if sock.recv(1) == b"":
                    break
            except socket.timeout:
                pass
    except (BrokenPipeError, ConnectionResetError):
        pass
    sock.close()
    return time.monotonic() - started


def early_413_figure(server: litkit.Server) -> float:
    """Seconds from sending headers announcing a 1 GB body (and no body) to the 413."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=30)
    started = time.monotonic()
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000\r\n\r\n")
    status = _status_line(sock)
    sock.close()
    if status != 413:
        raise RuntimeError(f"expected 413, got {status}")
    return time.monotonic() - started


def _line(name: str, values: list[float], unit: str) -> str:
    return f"{name}: {min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f} {unit}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    runs = range(args.runs)
    print(f"litkit {litkit.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} cores; min / median / max of {args.runs} runs")
    with litkit.serve(Crasher(), port=0, workers=2, cancel_grace=1.0, client_timeout=2.0) as server:
        for how in ("exit", "segv", "sigkill"):
            figures = [crash_figures(server, how) for _ in runs]
            print(_line(f"crash ({how}) to the client's 500", [f[0] for f in figures], "s"))
            print(_line(f"crash ({how}): 500 to replacement idle", [f[1] for f in figures], "s"))
        print(_line("hang-up to runaway kill, cancel_grace=1", [grace_kill_figure(server) for _ in runs], "s"))
        print(_line("one byte / 50 ms of headers closed after, client_timeout=2", [slowloris_figure(server) for _ in runs], "s"))
        print(_line("Content-Length 1 GB to 413, no body sent", [early_413_figure(server) for _ in runs], "s"))
    print(_line("kill -9 of the server to both workers gone", [orphan_figure() for _ in runs], "s"))
    print(_line("the same, one worker inside C holding the GIL", [orphan_figure({"regex": True}) for _ in runs], "s"))
    stalled = [stalled_reader_figure(1.0) for _ in runs]
    print(_line("stream not read: MB sent before the cancel", [s[0] for s in stalled], "MB"))
    print(_line("stream not read: cancelled after, client_timeout=1", [s[1] for s in stalled], "s"))


if __name__ == "__main__":
    main()
