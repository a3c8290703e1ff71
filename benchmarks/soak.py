"""Soak: streams cut by their clients mid-way, mixed with completed requests, then a check that
every request is accounted for and that the serving process's fds, threads and RSS are back at
their baseline. The serving process is the one that runs the server's loop and spawns the workers:
this one, or on Python 3.10-3.12 the server's own process.

    python benchmarks/soak.py [--completed 20000] [--cut 20000] [--concurrency 32] [--workers 2]

The load runs in a separate process (``python benchmarks/soak.py --client URL ...``), an asyncio
HTTP/1.1 client on raw sockets, so it neither shares the server's GIL nor adds threads or fds to
the process being measured. ``tests/server/test_soak.py`` runs the same thing at 1,000 + 1,000.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import os
import random
import subprocess
import sys
import threading
import time
from typing import Any

import psutil

import litkit

HERE = os.path.abspath(__file__)
WARM_UP = 1000  # at most this many completed and cut requests each, before the baseline is read
REQUEST_TIMEOUT_S = 30.0  # per request, in the client: a hang is reported, not waited for


class Churn(litkit.LitAPI):
    """Streams ``{"i": n}`` chunks, ``n`` of them, as fast as it can."""

    def predict(self, x):
        for i in range(x["n"]):
            yield {"i": i}


# -- the serving process's resources --------------------------------------------------------------


def serving_process(server: litkit.Server) -> psutil.Process:
    """The process that runs ``server``'s loop: its workers' parent."""
    return psutil.Process(server.status()["workers"][0]["pid"]).parent()


def resources(process: psutil.Process) -> dict[str, int | None]:
    """Open fds, OS threads, Python threads (None in another process) and RSS (bytes) of ``process``.

    In this process, RSS is read after glibc hands its free heap pages back to the OS
    (``malloc_trim``): a burst of requests leaves freed memory that glibc keeps for reuse, a few
    MiB that varies from run to run with how the heap fragmented. Memory still in use, a leak
    included, stays counted in full. Another process's RSS is read as it is.
    """
    here = process.pid == os.getpid()
    if here:
        _return_free_heap()
    return {
        "fds": process.num_fds(),
        "os_threads": process.num_threads(),
        "threads": threading.active_count() if here else None,
        "rss": process.memory_info().rss,
    }


def _return_free_heap() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: RSS is read as it is
    libc.malloc_trim(0)


def wait_for_idle(server: litkit.Server, expected_done: int, deadline_s: float = 30.0) -> dict[str, Any]:
    """Wait until every request is in a final state and every worker is idle; return status()."""
    deadline = time.monotonic() + deadline_s
    while True:
        status = server.status()
        counts = status["counts"]
        done = sum(counts[state] for state in ("completed", "failed", "cancelled", "timed_out"))
        if done >= expected_done and all(w["state"] == "idle" for w in status["workers"]):
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"not idle after {deadline_s}s: {counts}, workers {status['workers']}")
        time.sleep(0.01)


def run_client(url: str, completed: int, cut: int, concurrency: int, timeout_s: float = 600.0) -> dict[str, Any]:
    """Run the load in a child process and return its report."""
    command = [sys.executable, HERE, "--client", url, "--completed", str(completed), "--cut", str(cut), "--concurrency", str(concurrency)]
    output = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=True).stdout
    return json.loads(output)


# -- the client process ---------------------------------------------------------------------------


async def _one(host: str, port: int, path: str, cut: bool) -> str:
    """One request: read the whole stream, or (cut) its first chunk and hang up. Returns the outcome."""
    reader, writer = await asyncio.open_connection(host, port)  # a numeric host: no resolver thread
    try:
        body = json.dumps({"n": 100_000 if cut else 5}).encode()
        writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Length: %d\r\n\r\n%s" % (path.encode(), host.encode(), port, len(body), body))
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        if status != 200:
            return f"status {status}"
        if cut:
            await reader.readuntil(b"}\n")  # the first chunk's JSON, then hang up mid-stream
            return "cut"
        data = await reader.readuntil(b"\r\n0\r\n\r\n")
        return "completed" if data.count(b'{"i":') == 5 else "short"
    finally:
        writer.close()


async def _load(url: str, completed: int, cut: int, concurrency: int) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split("/")[0].rsplit(":", 1)
    plan = [True] * cut + [False] * completed
    random.Random(0).shuffle(plan)
    outcomes: dict[str, int] = {}
    queue = iter(plan)

    async def run() -> None:
        for is_cut in queue:
            try:
                outcome = await asyncio.wait_for(_one(host, int(port), "/predict", is_cut), REQUEST_TIMEOUT_S)
            except asyncio.TimeoutError:
                outcome = "no answer within %gs" % REQUEST_TIMEOUT_S
            except (OSError, asyncio.IncompleteReadError) as error:
                outcome = type(error).__name__
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    started = time.monotonic()
    await asyncio.gather(*(run() for _ in range(concurrency)))
    return {"outcomes": outcomes, "seconds": time.monotonic() - started}


# -- the soak -------------------------------------------------------------------------------------


def soak(completed: int, cut: int, concurrency: int, workers: int, rounds: int = 1) -> dict[str, Any]:
    """Warm up, read the serving process's resources, then run ``rounds`` rounds of ``completed``
    + ``cut`` requests, reading them again after each (``rounds_after``; ``after`` is the last)."""
    server = litkit.serve(Churn(), port=0, workers=workers)
    try:
        # Warm-up, at the same concurrency and up to the same size: allocator pools, code paths,
        # caches, and the working set of that many requests in flight. The first 1,000 + 1,000
        # grow the heap by a few MiB, once; rounds after it move it by -1 to +2 MiB, with a one-off
        # step of up to 6.3 MiB seen on 3.13 in a full test run. A leak grows it in every round.
        warm_completed, warm_cut = min(completed, WARM_UP), min(cut, WARM_UP)
        run_client(server.url, warm_completed, warm_cut, concurrency)
        warm = wait_for_idle(server, warm_completed + warm_cut)
        process = serving_process(server)
        gc.collect()  # objects left by earlier work (e.g. other tests) close their fds now, not mid-soak
        before = resources(process)
        outcomes: dict[str, int] = {}
        seconds = 0.0
        rounds_after = []
        for round_ in range(1, rounds + 1):
            load = run_client(server.url, completed, cut, concurrency)
            seconds += load["seconds"]
            for outcome, count in load["outcomes"].items():
                outcomes[outcome] = outcomes.get(outcome, 0) + count
            status = wait_for_idle(server, warm_completed + warm_cut + round_ * (completed + cut))
            deadline = time.monotonic() + 10
            while resources(process)["fds"] > before["fds"] and time.monotonic() < deadline:
                time.sleep(0.01)  # connections the clients closed last may still be closing
            rounds_after.append(resources(process))
        counts = {state: status["counts"][state] - warm["counts"][state] for state in status["counts"]}
        return {
            "load": {"outcomes": outcomes, "seconds": seconds},
            "counts": counts,
            "workers": status["workers"],
            "before": before,
            "after": rounds_after[-1],
            "rounds_after": rounds_after,
            "pid": process.pid,
        }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", metavar="URL", help="(internal) run the load against URL and print its report")
    parser.add_argument("--completed", type=int, default=20_000)
    parser.add_argument("--cut", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of --completed + --cut, RSS read after each")
    args = parser.parse_args()
    if args.client:
        print(json.dumps(asyncio.run(_load(args.client, args.completed, args.cut, args.concurrency))))
        return
    report = soak(args.completed, args.cut, args.concurrency, args.workers, args.rounds)
    before, after = report["before"], report["after"]
    print(f"{args.rounds} x {args.completed} completed + {args.cut} cut streams, concurrency {args.concurrency}, {args.workers} workers: {report['load']['seconds']:.1f}s")
    print(f"client outcomes: {report['load']['outcomes']}")
    print(f"server counts:   {report['counts']}")
    print(f"workers:         {[(w['state'], w['handled'], w['restarts']) for w in report['workers']]}")
    print(f"serving process  {report['pid']}" + (" (this one)" if report["pid"] == os.getpid() else " (the server's own)"))
    for key in ("fds", "os_threads", "threads"):
        if before[key] is not None:
            print(f"{key:15}  {before[key]} -> {after[key]}")
    print(f"rss              {before['rss'] / 2**20:.1f} MiB -> {after['rss'] / 2**20:.1f} MiB ({(after['rss'] - before['rss']) / 2**20:+.1f} MiB)")
    if args.rounds > 1:
        rss = [before["rss"]] + [resources["rss"] for resources in report["rounds_after"]]
        print("rss by round     " + ", ".join(f"{(b - a) / 2**20:+.1f} MiB" for a, b in zip(rss, rss[1:])))


if __name__ == "__main__":
    main()
