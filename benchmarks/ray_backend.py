"""The same LitAPI classes on litkit's in-process server and on Ray Serve (``backend="ray"``), side by side.

    python benchmarks/ray_backend.py [--requests 300] [--rounds 3] [--hangups 20]

Needs the Ray extra (``pip install 'litkit[ray]'``). One local Ray (``num_cpus=2``, no dashboard)
and one litkit server run at once, each with one worker/replica; the rounds alternate between
them so that the machine's noise falls on both. Per round and system:

- echo: sequential requests on one keep-alive connection (p50/p95 ms), then 4 client threads
  at once (requests/s; on Ray also against a deployment with ``max_ongoing_requests=4``), and
  the CPU seconds all processes of the system spent per request (litkit: this process's server
  thread is not separable, so its CPU counts the whole process);
- stream: time to the first chunk and chunks/s of a 2,000-chunk stream;
- cancellation: a client hangs up after 3 chunks of a generator that yields every 1 ms, 5 ms
  or 20 ms (sync and async): chunks produced after the hang-up, and ms until its ``finally`` ran.

The classes are defined here, in ``__main__``: they reach litkit's workers and Ray's replicas by
value. Prints a Markdown report (docs/benchmarks.md, "Ray Serve backend").
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from typing import Any, Callable

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import litkit  # noqa: E402


def record(path: str, event: str) -> None:
    with open(path, "a") as log:
        log.write(json.dumps({"event": event, "t": time.monotonic()}) + "\n")


class Echo(litkit.LitAPI):
    def predict(self, x):
        return x


class Tokens(litkit.LitAPI):
    """Yields ``n`` chunks, ``interval`` s apart; records each yield and the finally in ``events``."""

    def predict(self, x):
        events, interval = x.get("events"), x.get("interval", 0)
        try:
            for i in range(x["n"]):
                if events:
                    record(events, "yield")
                yield i
                if interval:
                    time.sleep(interval)
        finally:
            if events:
                record(events, "finally")

    def encode_response(self, output):
        for i in output:
            yield {"i": i}


class AsyncTokens(litkit.LitAPI):
    async def predict(self, x):
        events, interval = x.get("events"), x.get("interval", 0)
        try:
            for i in range(x["n"]):
                record(events, "yield")
                yield {"i": i}
                await asyncio.sleep(interval)
        finally:
            record(events, "finally")


class System:
    """One system under test: a base URL per API, and the processes whose CPU it spends."""

    def __init__(self, name: str, urls: dict[str, str], processes: Callable[[], list[psutil.Process]]) -> None:
        self.name = name
        self.urls = urls
        self.processes = processes

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.processes():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                pass
        return total


def _connection(url: str) -> tuple[http.client.HTTPConnection, str]:
    host_port, _, prefix = url.removeprefix("http://").partition("/")
    host, port = host_port.rsplit(":", 1)
    return http.client.HTTPConnection(host, int(port), timeout=60), ("/" + prefix if prefix else "")


def _post(connection: http.client.HTTPConnection, path: str, body: bytes) -> bytes:
    connection.request("POST", path, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {data[:200]!r}")
    return data


def echo(system: System, requests: int) -> dict[str, float]:
    connection, prefix = _connection(system.urls["echo"])
    body = json.dumps({"input": "x" * 64}).encode()
    for _ in range(20):  # warm up
        _post(connection, prefix + "/predict", body)
    cpu = system.cpu_seconds()
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        _post(connection, prefix + "/predict", body)
        latencies.append(time.perf_counter() - started)
    cpu_per_request = (system.cpu_seconds() - cpu) / requests
    connection.close()
    done = [0]
    lock = threading.Lock()

    def client(url: str, count: int) -> None:
        own, own_prefix = _connection(url)
        for _ in range(count):
            _post(own, own_prefix + "/predict", body)
            with lock:
                done[0] += 1
        own.close()

    def four_clients(url: str) -> float:
        done[0] = 0
        threads = [threading.Thread(target=client, args=(url, requests // 4)) for _ in range(4)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return done[0] / (time.perf_counter() - started)

    latencies.sort()
    figures = {
        "p50_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[int(0.95 * len(latencies))],
        "rps_4": four_clients(system.urls["echo"]),
        "cpu_ms_per_request": 1000 * cpu_per_request,
    }
    # Ray only: the same deployment with max_ongoing_requests=4 (sync hooks on 4 threads at once)
    figures["rps_4_ongoing_4"] = four_clients(system.urls["echo4"]) if "echo4" in system.urls else 0.0
    return figures


def stream(system: System, chunks: int = 2000) -> dict[str, float]:
    connection, prefix = _connection(system.urls["tokens"])
    connection.request("POST", prefix + "/predict", json.dumps({"n": chunks}).encode(), {"Content-Type": "application/json"})
    started = time.perf_counter()
    response = connection.getresponse()
    response.readline()
    first = time.perf_counter() - started
    count = 1
    while response.readline():
        count += 1
    elapsed = time.perf_counter() - started
    connection.close()
    if count != chunks:
        raise RuntimeError(f"expected {chunks} chunks, got {count}")
    return {"first_chunk_ms": 1000 * first, "chunks_per_s": count / elapsed}


def hang_up(system: System, api: str, interval: float, trials: int) -> dict[str, float]:
    after, finally_ms = [], []
    for _ in range(trials):
        with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as handle:
            events = handle.name
        url = system.urls[api]
        host_port, _, prefix = url.removeprefix("http://").partition("/")
        host, port = host_port.rsplit(":", 1)
        body = json.dumps({"n": 100_000, "interval": interval, "events": events}).encode()
        sock = socket.create_connection((host, int(port)))
        path = ("/" + prefix if prefix else "") + "/predict"
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        reader = sock.makefile("rb")
        seen = 0
        while seen < 3:  # three NDJSON lines (each in a chunk of its own)
            if reader.readline().startswith(b"{"):
                seen += 1
        reader.close()
        sock.close()
        left = time.monotonic()
        deadline = left + 10
        while True:
            with open(events) as log:
                lines = [json.loads(line) for line in log if line.endswith("\n")]
            ended = [e for e in lines if e["event"] == "finally"]
            if ended or time.monotonic() > deadline:
                break
            time.sleep(0.002)
        os.unlink(events)
        if not ended:
            raise RuntimeError(f"{system.name} {api}: finally did not run within 10 s of the hang-up")
        after.append(sum(1 for e in lines if e["event"] == "yield" and e["t"] > left))
        finally_ms.append(1000 * (ended[0]["t"] - left))
        time.sleep(0.05)
    return {"max_after": max(after), "median_after": statistics.median(after), "finally_p50_ms": statistics.median(finally_ms), "finally_max_ms": max(finally_ms)}


APPS = ("echo", "echo4", "tokens", "async")


def start_ray(address: str | None, num_cpus: float) -> tuple[System, Any]:
    """A local Ray with Serve on a free port, or (``address``) the cluster and Serve running there."""
    import ray
    from ray import serve

    if address is None:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    else:
        from ray.serve.context import _get_global_client

        ray.init(address=address, log_to_driver=False)
        port = _get_global_client().http_config.port
    options = {"ray_actor_options": {"num_cpus": num_cpus}}
    apps = {"echo": (Echo(), {}), "echo4": (Echo(), {"max_ongoing_requests": 4}), "tokens": (Tokens(), {}), "async": (AsyncTokens(), {})}
    serve.run_many([serve.RunTarget(litkit.ray_app(api, **options, **more), name=f"bench-{name}", route_prefix=f"/bench-{name}") for name, (api, more) in apps.items()])
    base = f"http://127.0.0.1:{port}"
    me = psutil.Process()
    # Ray's processes are this driver's descendants (GCS, raylet, proxy, controller, replicas);
    # on a cluster joined with --address, this process's only.
    return System("ray", {name: f"{base}/bench-{name}" for name in APPS}, lambda: [me, *me.children(recursive=True)]), ray


def start_litkit() -> tuple[System, list[Any]]:
    servers = [litkit.serve(api, port=0) for api in (Echo(), Tokens(), AsyncTokens())]
    me = psutil.Process()
    pids = {s.status()["workers"][0]["pid"] for s in servers}
    return System("litkit", {"echo": servers[0].url, "tokens": servers[1].url, "async": servers[2].url}, lambda: [me, *(p for p in me.children(recursive=True) if p.pid in pids)]), servers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hangups", type=int, default=10)
    parser.add_argument("--address", default=None, help="join this Ray cluster (its Serve already started) instead of starting a local Ray")
    parser.add_argument("--num-cpus", type=float, default=0.5, help="CPUs per Ray replica")
    args = parser.parse_args()
    local, servers = start_litkit()
    on_ray, ray = start_ray(args.address, args.num_cpus)
    results: dict[str, dict[str, list[float]]] = {"litkit": {}, "ray": {}}
    try:
        for round_number in range(args.rounds):
            for system in (local, on_ray) if round_number % 2 == 0 else (on_ray, local):
                figures = {**echo(system, args.requests), **stream(system)}
                for api in ("tokens", "async"):
                    for interval in (0.001, 0.005, 0.02):
                        for key, value in hang_up(system, api, interval, args.hangups).items():
                            figures[f"{api}_{int(interval * 1000)}ms_{key}"] = value
                for key, value in figures.items():
                    results[system.name].setdefault(key, []).append(value)
                print(f"round {round_number + 1} {system.name}: " + ", ".join(f"{k}={v:.3g}" for k, v in figures.items()), file=sys.stderr, flush=True)
    finally:
        for server in servers:
            server.stop()
        from ray import serve

        if args.address is None:
            serve.shutdown()
        else:
            for name in APPS:
                serve.delete(f"bench-{name}", _blocking=False)
        ray.shutdown()
    print(report(results, args))


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> str:
    lines = [
        f"Medians of {args.rounds} alternating rounds ({args.requests} echo requests, {args.hangups} hang-ups per case and round); "
        "for the hang-up maxima, the largest of any round.",
        "",
        "| figure | litkit in-process | Ray Serve | Ray / litkit |",
        "|---|---|---|---|",
    ]
    for key in results["litkit"]:
        pick = max if "max" in key else statistics.median
        a, b = pick(results["litkit"][key]), pick(results["ray"][key])
        ratio = f"{b / a:.2f}x" if a else "-"
        if key == "rps_4_ongoing_4":
            a_text = "-"
            lines.append(f"| {key} | {a_text} | {b:.3g} | - |")
            continue
        lines.append(f"| {key} | {a:.3g} | {b:.3g} | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
