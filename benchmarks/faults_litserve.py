"""The same faults against LitServe, for the comparison column of docs/reliability.md.

Needs LitServe in its own environment (it is not a litkit dependency):

    python -m venv /tmp/litserve-venv && /tmp/litserve-venv/bin/pip install litserve==0.2.19 requests psutil
    /tmp/litserve-venv/bin/python benchmarks/faults_litserve.py

Each scenario starts a fresh LitServe server in a subprocess (one worker, CPU), observes what a
client sees, and ends every process it started, by pid.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import requests

SERVER = textwrap.dedent(
    """
    import os, sys, time, ctypes
    import litserve as ls

    class Api(ls.LitAPI):
        def setup(self, device):
            pass
        def decode_request(self, request):
            return request
        def predict(self, x):
            if x.get("crash") == "exit":
                os._exit(3)
            if x.get("crash") == "segv":
                ctypes.string_at(0)
            if x.get("seconds"):
                deadline = time.monotonic() + x["seconds"]
                while time.monotonic() < deadline:
                    time.sleep(0.01)
            return {"pid": os.getpid()}
        def encode_response(self, output):
            return output

    if __name__ == "__main__":
        server = ls.LitServer(Api(), accelerator="cpu", workers_per_device=1, timeout=%(timeout)s)
        server.run(port=int(sys.argv[1]), generate_client_file=False, log_level="warning"%(run_extra)s)
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LitServeProcess:
    def __init__(self, timeout: str = "30", run_extra: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.file = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
        self.file.write(SERVER % {"timeout": timeout, "run_extra": run_extra})
        self.file.close()
        self.proc = subprocess.Popen([sys.executable, self.file.name, str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.seen: dict[int, psutil.Process] = {}
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("LitServe did not start")
            time.sleep(0.1)
        self.record()

    def record(self) -> list[psutil.Process]:
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in children:
            self.seen.setdefault(child.pid, child)
        return children

    def close(self) -> None:
        self.record()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for process in self.seen.values():
            try:
                process.kill()  # psutil checks it is the same process before signalling
            except psutil.Error:
                pass
        os.unlink(self.file.name)


def alive(processes) -> list[psutil.Process]:
    result = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                result.append(process)
        except psutil.NoSuchProcess:
            pass
    return result


def post(url: str, body: object, timeout: float = 15.0, **kwargs) -> tuple[str, float]:
    started = time.monotonic()
    try:
        response = requests.post(url + "/predict", json=body, timeout=timeout, **kwargs)
        outcome = f"{response.status_code} {response.text[:80]!r}"
    except requests.RequestException as error:
        outcome = f"{type(error).__name__}"
    return outcome, time.monotonic() - started


def crash(how: str) -> None:
    server = LitServeProcess()
    try:
        outcome, seconds = post(server.url, {"crash": how})
        print(f"crash ({how}) mid-request: client got {outcome} after {seconds:.2f}s")
        time.sleep(3)
        outcome, seconds = post(server.url, {"x": 1})
        print(f"crash ({how}): next request 3 s later: {outcome} after {seconds:.2f}s; server process alive: {server.proc.poll() is None}")
    finally:
        server.close()


def runaway() -> None:
    server = LitServeProcess(timeout="1")
    try:
        outcome, seconds = post(server.url, {"seconds": 8})
        print(f"predict busy 8 s, timeout=1: client got {outcome} after {seconds:.2f}s")
        outcome, seconds = post(server.url, {"x": 1})
        print(f"  the next request: {outcome} after {seconds:.2f}s (the worker finished the abandoned one first)")
    finally:
        server.close()


def parent_death() -> None:
    server = LitServeProcess()
    try:
        busy = socket.create_connection(("127.0.0.1", server.port))
        body = json.dumps({"seconds": 60}).encode()
        busy.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        time.sleep(0.5)
        descendants = server.record()
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        time.sleep(2)
        print(f"kill -9 of the serving process: {len(alive(descendants))} of {len(descendants)} child processes alive 2 s later")
        busy.close()
    finally:
        server.close()


def bad_input_and_access() -> None:
    server = LitServeProcess()
    try:
        started = time.monotonic()
        response = requests.post(server.url + "/predict", data=b'{"a": [1, 2', headers={"Content-Type": "application/json"}, timeout=10)
        print(f"truncated JSON: {response.status_code} after {time.monotonic() - started:.3f}s")
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        started = time.monotonic()
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n")
        try:
            line = sock.makefile("rb").readline()
            print(f"Content-Length 1 GB, no body sent: {line.strip()!r} after {time.monotonic() - started:.2f}s")
        except socket.timeout:
            print("Content-Length 1 GB, no body sent: no answer within 5 s (waits for the body)")
        sock.close()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=15)
        started = time.monotonic()
        sock.settimeout(0.05)
        closed = None
        for byte in b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n" * 10:
            if time.monotonic() - started > 12:
                break
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    closed = time.monotonic() - started
                    break
            except socket.timeout:
                pass
            except OSError:
                closed = time.monotonic() - started
                break
        sock.close()
        print(f"one header byte / 50 ms: {'closed after %.1fs' % closed if closed else 'still open after 12 s'}")
        outcome, _ = post(server.url, {"x": 1}, headers={"Origin": "http://evil.example"})
        print(f"foreign Origin: {outcome}")
        outcome, _ = post(server.url, {"x": 1}, headers={"Host": "rebind.evil.example"})
        print(f"foreign Host on loopback: {outcome}")
        processes = [psutil.Process(server.proc.pid), *server.record()]
        listening = sorted({(c.laddr.ip, c.laddr.port) for p in processes for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN})
        print(f"listening inet sockets of the server's processes: {listening}")
    finally:
        server.close()


def main() -> None:
    import litserve

    print(f"LitServe {litserve.__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} cores")
    for how in ("exit", "segv"):
        crash(how)
    runaway()
    parent_death()
    bad_input_and_access()


if __name__ == "__main__":
    main()
