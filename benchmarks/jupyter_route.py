"""Streams through litkit's Jupyter route against the same server called directly and through
jupyter-server-proxy, measured side by side: when the first chunk arrives, and what a hang-up after
5 chunks leaves running.

    python benchmarks/jupyter_route.py [--rounds 20]

Starts a Jupyter server as JupyterHub starts a single-user server (``base_url=/user/bench/``,
``JUPYTERHUB_SERVICE_PREFIX`` set, a token, litkit's extension enabled by its shipped config file,
jupyter-server-proxy installed), one kernel of it, and ``litkit.serve()`` of a token streamer in
that kernel. Then, per round, in turn for each path (direct, litkit's route, jupyter-server-proxy's
route) and each stream kind (NDJSON, SSE), one request on a fresh connection:

* **first chunk**: ms from sending the request to reading the first chunk, of a stream whose first
  token is ready at once (then one every 50 ms, 20 in all);
* **hang-up**: read 5 chunks of a stream of a token every 50 ms, close the socket; then how many
  tokens the generator produced and how long after the close its ``finally`` ran (both recorded
  by the worker with CLOCK_MONOTONIC, comparable across processes on Linux).

Medians and ranges over the rounds; docs/benchmarks.md ("Streams behind JupyterHub") and README's
"Remote notebooks" cite them. Needs ``pip install -e '.[test]'`` (jupyter_server, jupyter-server-proxy).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PREFIX = "/user/bench/"
HANG_UP_AFTER = 5
INTERVAL_S = 0.05

KERNEL_CELL = r"""
import json, os, time, litkit

def record(path, event):
    with open(path, "a") as log:
        log.write(json.dumps({"event": event, "t": time.monotonic()}) + "\n")

class Tokens(litkit.LitAPI):
    def predict(self, x):
        try:
            for i in range(x["n"]):
                record(x["events"], "yield")
                yield i
                time.sleep(x["interval"])
        finally:
            record(x["events"], "finally")

    def encode_response(self, output):
        for i in output:
            yield {"token": i}

server = litkit.serve(Tokens(), port=0)
print(json.dumps({"port": server.port, "public_url": server.public_url}))
"""


def _wait(condition, deadline_s: float, what: str):
    deadline = time.monotonic() + deadline_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {deadline_s}s waiting for {what}")
        time.sleep(0.05)
    return value


def start_jupyter(folder: str, token: str) -> tuple[subprocess.Popen[bytes], int]:
    env = dict(os.environ, JUPYTERHUB_SERVICE_PREFIX=PREFIX, JUPYTER_CONFIG_PATH=os.path.join(ROOT, "jupyter-config"), PYTHONPATH=ROOT)
    for variable in ("JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR", "JUPYTER_CONFIG_DIR"):
        env[variable] = os.path.join(folder, variable.lower())
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={folder}", f"--ServerApp.base_url={PREFIX}", "--ServerApp.allow_root=True"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=folder, start_new_session=True,
    )
    runtime = env["JUPYTER_RUNTIME_DIR"]

    def info():
        for path in glob.glob(os.path.join(runtime, f"jpserver-{process.pid}.json")):
            try:
                with open(path) as file:
                    return json.load(file)
            except ValueError:
                return None
        return None

    return process, _wait(info, 60, "the Jupyter server")["port"]


def start_kernel(port: int, token: str, runtime: str):
    import requests
    from jupyter_client.blocking import BlockingKernelClient

    auth = {"Authorization": f"token {token}"}
    _wait(lambda: requests.get(f"http://127.0.0.1:{port}{PREFIX}api/status", headers=auth, timeout=5).ok, 60, "the Jupyter API")
    kernel_id = requests.post(f"http://127.0.0.1:{port}{PREFIX}api/kernels", json={"name": "python3"}, headers=auth, timeout=30).json()["id"]
    connection_file = os.path.join(runtime, f"kernel-{kernel_id}.json")
    _wait(lambda: os.path.exists(connection_file), 60, "the kernel")
    client = BlockingKernelClient(connection_file=connection_file)
    client.load_connection_file()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return client


def run_cell(client, code: str) -> str:
    output = []
    reply = client.execute_interactive(code, timeout=60, output_hook=lambda m: output.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"the cell failed: {reply['content']}")
    return "".join(output)


class Stream:
    """One streaming POST on a fresh connection, read chunk by chunk (chunked transfer coding)."""

    def __init__(self, port: int, path: str, body: dict, token: str, sse: bool) -> None:
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            f"Authorization: token {token}\r\nAccept: {'text/event-stream' if sse else 'application/x-ndjson'}\r\n\r\n"
        ).encode()
        self.sse = sse
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sent = time.perf_counter()
        self.sock.sendall(head + payload)
        self.file = self.sock.makefile("rb")
        status = self.file.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"{path}: {status!r}")
        self.chunked = False
        while (line := self.file.readline()) not in (b"\r\n", b""):
            self.chunked |= line.lower().startswith(b"transfer-encoding: chunked")
        self._pending = b""

    def next_chunk(self) -> bytes:
        while True:
            while b"\n" not in self._pending:
                if self.chunked:
                    size = int(self.file.readline().strip(), 16)
                    self._pending += self.file.read(size)
                    self.file.readline()  # the CRLF after the chunk
                else:
                    self._pending += self.file.read1(65536)
            line, _, self._pending = self._pending.partition(b"\n")
            if line.strip():
                return line

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def first_chunk_ms(port: int, path: str, token: str, sse: bool, events: str) -> float:
    stream = Stream(port, path, {"n": 20, "interval": INTERVAL_S, "events": events}, token, sse)
    stream.next_chunk()
    elapsed = 1000 * (time.perf_counter() - stream.sent)
    stream.close()
    _wait(lambda: _events(events).count("finally") >= 1, 30, "the stream to end")
    return elapsed


def _events(path: str) -> list[str]:
    try:
        with open(path) as file:
            return [json.loads(line)["event"] for line in file if line.endswith("\n")]
    except FileNotFoundError:
        return []


def hang_up(port: int, path: str, token: str, sse: bool, events: str) -> tuple[int, float]:
    """(tokens produced, ms from the close to ``finally``; 30 s cap) for a client that read 5 chunks."""
    stream = Stream(port, path, {"n": 600, "interval": INTERVAL_S, "events": events}, token, sse)
    for _ in range(HANG_UP_AFTER):
        stream.next_chunk()
    closed = time.monotonic()
    stream.close()
    _wait(lambda: "finally" in _events(events), 40, "the generator's finally")
    with open(events) as file:
        rows = [json.loads(line) for line in file]
    finally_t = next(row["t"] for row in rows if row["event"] == "finally")
    return sum(row["event"] == "yield" for row in rows), 1000 * (finally_t - closed)


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):7.1f}, range {min(values):.1f}-{max(values):.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--proxy-hang-ups", type=int, default=2, help="through jupyter-server-proxy a hang-up runs the whole stream (30 s): this many")
    args = parser.parse_args()
    token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as folder:
        process, port = start_jupyter(folder, token)
        client = None
        try:
            client = start_kernel(port, token, os.path.join(folder, "jupyter_runtime_dir"))
            served = json.loads(run_cell(client, KERNEL_CELL))
            paths = {
                "direct": (served["port"], "/predict"),
                "litkit route": (port, f"{served['public_url']}/predict"),
                "jupyter-server-proxy": (port, f"{PREFIX}proxy/{served['port']}/predict"),
            }
            assert served["public_url"] == f"{PREFIX}litkit/{served['port']}", served
            counter = iter(range(1_000_000))
            firsts: dict[tuple[str, bool], list[float]] = {}
            hangs: dict[tuple[str, bool], list[tuple[int, float]]] = {}
            for round_number in range(args.rounds):
                for name, (target_port, path) in paths.items():
                    for sse in (False, True):
                        events = os.path.join(folder, f"events-{next(counter)}.jsonl")
                        firsts.setdefault((name, sse), []).append(first_chunk_ms(target_port, path, token, sse, events))
                        if name == "jupyter-server-proxy" and (not sse or round_number >= args.proxy_hang_ups):
                            continue  # it buffers NDJSON whole: no 5 chunks to read before the end
                        events = os.path.join(folder, f"events-{next(counter)}.jsonl")
                        hangs.setdefault((name, sse), []).append(hang_up(target_port, path, token, sse, events))
            print(f"{args.rounds} rounds; a token every {1000 * INTERVAL_S:g} ms; hang-up after {HANG_UP_AFTER} chunks")
            for (name, sse), values in firsts.items():
                kind = "SSE   " if sse else "NDJSON"
                if (name, sse) not in hangs:
                    print(f"{name:21} {kind} first chunk ms: {summary(values)} | buffered whole: no hang-up after 5 chunks possible")
                    continue
                tokens = [t for t, _ in hangs[(name, sse)]]
                delays = [d for _, d in hangs[(name, sse)]]
                print(
                    f"{name:21} {kind} first chunk ms: {summary(values)} | after hang-up: tokens {summary(tokens)}, "
                    f"finally ms after the close {summary(delays)} ({len(delays)} hang-ups)"
                )
            run_cell(client, "server.stop()")
        finally:
            if client is not None:
                client.stop_channels()
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


if __name__ == "__main__":
    main()
