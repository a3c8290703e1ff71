"""What a busy kernel costs an endpoint served from it, and what serving costs the busy kernel.

    python benchmarks/busy_kernel.py [--pythons 3.10,3.11,3.12,3.13] [--runs 3] [--requests 300] [--before DIR]

For each interpreter that ``pyenv versions`` lists (3.10 to 3.13; each gets a small virtual
environment with tornado and cloudpickle under ``benchmarks/.venvs/``, and litkit from this
checkout), it starts an app process, the stand-in for a notebook kernel, that serves either
litkit (``litkit.serve(Echo())``) or a plain Tornado echo handler on a thread of its own (what
notebook servers such as Panel do), while its main thread, the stand-in for a running cell, is
``idle`` (sleeps), ``busy`` in pure Python (``x += i * i`` loops) or in ``c`` (a regex that
backtracks for about 50 ms inside one GIL-holding C call, again and again).

From a client process it measures, side by side in one run:

- echo: ``{"input": 1}`` requests one at a time with 2 ms pauses, p50 and p99 in ms;
- lag: a stream of one token every 20 ms (litkit only), from the worker's yield to the client
  reading it (``time.monotonic()`` is one clock for every process on Linux), p50 in ms;
- the cell's speed: the busy loop's iterations per second with no server, with a server idle,
  and with a server answering a steady 100 requests a second (ratios to no server).

``--before DIR`` adds a second litkit, from another checkout (``git worktree add DIR COMMIT``), as
one more system measured in the same rounds: before and after a change, side by side.

Prints a Markdown table per interpreter; docs/benchmarks.md keeps the figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENVS = os.path.join(HERE, ".venvs")
LOADS = ("idle", "busy", "c")
REQUIREMENTS = ("tornado>=6.3", "cloudpickle>=2.2")


# -- the app: a kernel that serves while its main thread computes ---------------------------------


def _busy_python() -> int:
    x = 0
    for i in range(10000):
        x += i * i
    return 1


_BACKTRACK = re.compile(r"(a+)+$")
_BACKTRACK_TEXT = "a" * 20 + "b"  # about 50 ms inside one C call that holds the GIL


def _busy_c() -> int:
    _BACKTRACK.match(_BACKTRACK_TEXT)
    return 1


def _plain_tornado(port_holder: list[int], ready: threading.Event) -> None:
    import asyncio

    import tornado.httpserver
    import tornado.netutil
    import tornado.web

    class Echo(tornado.web.RequestHandler):
        def post(self) -> None:
            self.set_header("Content-Type", "application/json")
            self.write(json.dumps({"output": json.loads(self.request.body)["input"]}))

    async def main() -> None:
        server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/predict", Echo)]))
        sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        port_holder.append(sockets[0].getsockname()[1])
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def app(server_kind: str, load: str) -> None:
    """Serve, announce the port on stdout, run ``load`` on the main thread until stdin says stop,
    then print the loop's rate."""
    port = 0
    server = None
    if server_kind.startswith("litkit"):
        sys.path.insert(0, os.environ["LITKIT_CHECKOUT"])
        import litkit

        class Echo(litkit.LitAPI):
            def decode_request(self, request):
                return request.get("input")

            def predict(self, x):
                return x

            def encode_response(self, output):
                return {"output": output}

        class Ticks(litkit.LitAPI):  # one token every `tick` seconds, stamped when yielded
            def predict(self, x):
                for _ in range(x["ticks"]):
                    time.sleep(x["tick"])
                    yield time.monotonic()

            def encode_response(self, output):
                for stamp in output:
                    yield {"t": stamp}

        server = litkit.serve({"/predict": Echo(), "/ticks": Ticks()}, port=0)
        port = server.port
    elif server_kind == "tornado":
        holder: list[int] = []
        ready = threading.Event()
        threading.Thread(target=_plain_tornado, args=(holder, ready), daemon=True).start()
        ready.wait(10)
        port = holder[0]
    print(json.dumps({"port": port, "pid": os.getpid()}), flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    step = {"idle": lambda: time.sleep(0.01) or 0, "busy": _busy_python, "c": _busy_c}[load]
    count = 0
    started = time.perf_counter()
    while not stop.is_set():
        count += step()
    elapsed = time.perf_counter() - started
    if server is not None:
        server.stop()
    print(json.dumps({"rate": count / elapsed}), flush=True)


# -- the driver -----------------------------------------------------------------------------------


CHECKOUTS = {"litkit": ROOT}  # litkit system -> its checkout ("litkit before" with --before)


class App:
    def __init__(self, python: str, server_kind: str, load: str) -> None:
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        checkout = CHECKOUTS.get(server_kind, ROOT)
        env["PYTHONPATH"] = env["LITKIT_CHECKOUT"] = checkout
        self.process = subprocess.Popen(
            [python, os.path.abspath(__file__), "app", server_kind.replace(" ", "-"), load],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
        )
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {server_kind} app on {python} did not start")
        self.port = json.loads(line)["port"]

    def finish(self) -> float:
        """Stop the load and the server; the main loop's rate (iterations per second)."""
        self.process.stdin.close()
        line = self.process.stdout.readline()
        self.process.wait(30)
        return json.loads(line)["rate"] if line else float("nan")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def echo_latencies(port: int, count: int, pause: float = 0.002) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = b'{"input": 1}'
    headers = {"Content-Type": "application/json"}
    latencies = []
    for i in range(count + 20):
        started = time.perf_counter()
        connection.request("POST", "/predict", body, headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"echo answered {response.status}")
        if i >= 20:  # warm-up
            latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(pause)
    connection.close()
    return latencies


def stream_lags(port: int, ticks: int = 50, tick: float = 0.02) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", "/ticks", json.dumps({"ticks": ticks, "tick": tick}).encode(), {"Content-Type": "application/json"})
    response = connection.getresponse()
    lags = []
    while True:
        line = response.readline()
        if not line:
            break
        now = time.monotonic()
        lags.append((now - json.loads(line)["t"]) * 1000)
    connection.close()
    return lags[3:]


def steady_load(port: int, rate: float, seconds: float) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    next_at = time.perf_counter()
    end = next_at + seconds
    while next_at < end:
        connection.request("POST", "/predict", b'{"input": 1}', {"Content-Type": "application/json"})
        connection.getresponse().read()
        next_at += 1 / rate
        time.sleep(max(0.0, next_at - time.perf_counter()))
    connection.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(python: str, requests: int, cell_only: bool = False, cell_seconds: float = 3.0) -> dict[str, float]:
    figures: dict[str, float] = {}
    for server_kind in () if cell_only else (*CHECKOUTS, "tornado"):
        for load in LOADS:
            application = App(python, server_kind, load)
            try:
                latencies = echo_latencies(application.port, requests)
                figures[f"{server_kind} {load} p50"] = statistics.median(latencies)
                figures[f"{server_kind} {load} p99"] = percentile(latencies, 0.99)
                if server_kind != "tornado" and load != "c":
                    figures[f"{server_kind} {load} lag"] = statistics.median(stream_lags(application.port))
                application.finish()
            finally:
                application.kill()
    # What serving costs the cell: the busy loop's rate without a server, idle, at 100 req/s.
    cases = [("none", 0), ("litkit", 0), ("litkit", 100)] + [(kind, 100) for kind in CHECKOUTS if kind != "litkit"]
    for server_kind, rate in cases:
        application = App(python, server_kind, "busy")
        try:
            if rate:
                steady_load(application.port, rate, cell_seconds)
            else:
                time.sleep(cell_seconds)
            figures[f"cell {server_kind} {rate}"] = application.finish()
        finally:
            application.kill()
    return figures


def interpreters(wanted: list[str]) -> dict[str, str]:
    """version -> a python with tornado and cloudpickle, one venv per pyenv interpreter."""
    found = {}
    versions = subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True, check=True).stdout.split()
    for version in wanted:
        matches = [v for v in versions if v == version or v.startswith(version + ".")]
        if not matches:
            print(f"# no pyenv interpreter for {version}; skipped", file=sys.stderr)
            continue
        prefix = subprocess.run(["pyenv", "prefix", matches[-1]], capture_output=True, text=True, check=True).stdout.strip()
        venv = os.path.join(VENVS, f"busy-py{version}")
        python = os.path.join(venv, "bin", "python")
        if not os.path.exists(python):
            subprocess.run([os.path.join(prefix, "bin", "python"), "-m", "venv", venv], check=True)
            subprocess.run([python, "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
        found[matches[-1]] = python
    return found


def report(version: str, runs: list[dict[str, float]]) -> str:
    def cell(key: str) -> str:
        values = [run[key] for run in runs if key in run]
        if not values:
            return ""
        return f"{statistics.median(values):.2f}" + (f" ({min(values):.2f}-{max(values):.2f})" if len(values) > 1 else "")

    lines = [f"Python {version}, {len(runs)} run(s): median (min-max), ms", "", "| | idle | busy (Python) | busy (GIL-holding C) |", "|---|---|---|---|"]
    for server_kind in (*CHECKOUTS, "tornado") if "litkit idle p50" in runs[0] else ():
        for figure in ("p50", "p99", "lag"):
            if server_kind == "tornado" and figure == "lag":
                continue
            lines.append(f"| {server_kind} echo {figure} |" if figure != "lag" else f"| {server_kind} 20 ms stream lag |")
            lines[-1] += "".join(f" {cell(f'{server_kind} {load} {figure}')} |" for load in LOADS)
    def ratio(key: str) -> str:
        values = [run[key] / run["cell none 0"] for run in runs]
        return f"{statistics.median(values):.3f}x ({min(values):.3f}-{max(values):.3f})"

    base = statistics.median(run["cell none 0"] for run in runs)
    lines += ["", f"The busy cell's speed against no server ({base:.0f} loops/s): litkit idle {ratio('cell litkit 0')}, "
              f"litkit at 100 req/s {ratio('cell litkit 100')}"
              + "".join(f", {kind} at 100 req/s {ratio(f'cell {kind} 100')}" for kind in CHECKOUTS if kind != "litkit")]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "app":
        app(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pythons", default="3.10,3.11,3.12,3.13")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--before", help="another litkit checkout to measure side by side, as 'litkit before'")
    parser.add_argument("--cell-only", action="store_true", help="measure only the busy cell's speed (no echo, no stream)")
    parser.add_argument("--cell-seconds", type=float, default=3.0, help="seconds the cell's speed is measured for, per case")
    arguments = parser.parse_args()
    if arguments.before:
        CHECKOUTS["litkit before"] = os.path.abspath(arguments.before)
    pythons = interpreters(arguments.pythons.split(","))
    results: dict[str, list[dict[str, float]]] = {version: [] for version in pythons}
    for _ in range(arguments.runs):  # interleaved: every interpreter once per round
        for version, python in pythons.items():
            results[version].append(measure(python, arguments.requests, arguments.cell_only, arguments.cell_seconds))
    for version, runs in results.items():
        print(report(version, runs))
        print()


if __name__ == "__main__":
    main()
