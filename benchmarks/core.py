"""Core figures of litkit, measured on this machine: start-up, echo latency and throughput, stream
rate, time to first chunk, and the cancellation floors.

Run on demand (not part of the test suite):

    python benchmarks/core.py [--runs 3] [--out docs/benchmarks.md]

The load generator is a small asyncio HTTP/1.1 client (raw sockets, keep-alive), run in its own
process so that it does not share the server's GIL. It is deliberately simple: the same client will
be pointed at the peers (LitServe, FastAPI, raw Tornado) when the full comparison suite lands.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import litkit

HERE = os.path.dirname(os.path.abspath(__file__))


class Echo(litkit.LitAPI):
    def predict(self, x):
        return x


class Stream(litkit.LitAPI):
    def predict(self, x):
        yield from range(x["n"])


class Ticker(litkit.LitAPI):
    """Yields every 1 ms; records each yield and the finally with CLOCK_MONOTONIC."""

    def __init__(self, path):
        self.path = path

    def predict(self, x):
        try:
            for i in range(100_000):
                with open(self.path, "a") as log:
                    log.write(f"yield {time.monotonic()}\n")
                yield i
                time.sleep(0.001)
        finally:
            with open(self.path, "a") as log:
                log.write(f"finally {time.monotonic()}\n")


_LOAD = textwrap.dedent(
    r'''
    import asyncio, json, sys, time
    host, port, concurrency, total, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    body = b'{"input": 1}' if mode == "echo" else b'{"n": 10000}'
    request = (f"POST /predict HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    async def read_response(reader):
        head = await reader.readuntil(b"\r\n\r\n")
        first_byte = time.perf_counter()
        if b"chunked" in head.lower():
            while True:
                size = int((await reader.readline()).strip(), 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    return first_byte
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        return first_byte

    async def client(count, latencies, firsts):
        reader, writer = await asyncio.open_connection(host, port)
        for _ in range(count):
            start = time.perf_counter()
            writer.write(request)
            first = await read_response(reader)
            latencies.append(time.perf_counter() - start)
            firsts.append(first - start)
        writer.close()

    async def main():
        latencies, firsts = [], []
        start = time.perf_counter()
        await asyncio.gather(*(client(total // concurrency, latencies, firsts) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
        latencies.sort(); firsts.sort()
        print(json.dumps({"rps": len(latencies) / elapsed, "p50_ms": 1000 * latencies[len(latencies) // 2],
                          "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)], "elapsed_s": elapsed,
                          "first_p50_ms": 1000 * firsts[len(firsts) // 2]}))

    asyncio.run(main())
    '''
)


def load(server: litkit.Server, concurrency: int, total: int, mode: str = "echo") -> dict:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    output = subprocess.run(
        [sys.executable, "-c", _LOAD, host, port, str(concurrency), str(total), mode], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    return json.loads(output)


def startup_s(workers: int) -> float:
    started = time.perf_counter()
    server = litkit.serve(Echo(), port=0, workers=workers)
    elapsed = time.perf_counter() - started
    server.stop()
    return elapsed


def cancellation(runs: int) -> dict:
    from http.client import HTTPConnection

    finally_ms, after = [], []
    folder = tempfile.mkdtemp()
    for run in range(runs):
        path = os.path.join(folder, f"events{run}")
        with litkit.serve(Ticker(path), port=0) as server:
            host, port = server.url.removeprefix("http://").rsplit(":", 1)
            connection = HTTPConnection(host, int(port), timeout=10)
            connection.request("POST", "/predict", body=b"{}", headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            for _ in range(10):
                response.readline()
            connection.sock.close()
            connection.close()
            hung_up = time.monotonic()
            deadline = hung_up + 5
            while time.monotonic() < deadline:
                with open(path) as log:
                    lines = log.read().splitlines()
                if lines and lines[-1].startswith("finally"):
                    break
                time.sleep(0.002)
            finally_ms.append(1000 * (float(lines[-1].split()[1]) - hung_up))
            after.append(sum(1 for line in lines if line.startswith("yield") and float(line.split()[1]) > hung_up))
    return {"finally_ms": finally_ms, "after": after}


def spread(values: list[float]) -> str:
    return f"{min(values):,.2f} / **{statistics.median(values):,.2f}** / {max(values):,.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default=None, help="append a results section to this markdown file")
    args = parser.parse_args()

    rows: list[tuple[str, str]] = []
    rows.append(("`serve()` ready, 1 worker (s)", spread([startup_s(1) for _ in range(args.runs)])))
    rows.append(("`serve()` ready, 4 workers (s)", spread([startup_s(4) for _ in range(args.runs)])))
    with litkit.serve(Echo(), port=0) as server:
        load(server, 1, 200)  # warm-up
        for concurrency in (1, 8, 64):
            results = [load(server, concurrency, 2000 if concurrency > 1 else 1000) for _ in range(args.runs)]
            rows.append((f"echo req/s, concurrency {concurrency}", spread([r["rps"] for r in results])))
            rows.append((f"echo p50 latency (ms), concurrency {concurrency}", spread([r["p50_ms"] for r in results])))
            rows.append((f"echo p99 latency (ms), concurrency {concurrency}", spread([r["p99_ms"] for r in results])))
    with litkit.serve(Stream(), port=0) as server:
        results = [load(server, 1, 1, "stream") for _ in range(args.runs)]
        rows.append(("stream of 10,000 chunks (chunks/s)", spread([10_000 / r["elapsed_s"] for r in results])))
        rows.append(("time to first chunk (ms)", spread([r["first_p50_ms"] for r in results])))
    cancel = cancellation(max(args.runs, 10))
    rows.append(("`finally` after the hang-up, 1 ms chunks (ms)", spread(cancel["finally_ms"])))
    rows.append(("chunks produced after the hang-up", spread([float(a) for a in cancel["after"]])))

    header = (
        f"## Core figures, {datetime.date.today().isoformat()}\n\n"
        f"litkit {litkit.__version__}, Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; "
        f"`python benchmarks/core.py --runs {args.runs}`; one worker unless said; min / **median** / max.\n\n"
        "| figure | litkit |\n|---|---|\n"
    )
    table = header + "".join(f"| {name} | {value} |\n" for name, value in rows)
    print(table)
    if args.out:
        with open(args.out, "a") as out:
            out.write("\n" + table)


if __name__ == "__main__":
    main()
