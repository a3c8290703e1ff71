"""Benchmark litkit side by side with LitServe, FastAPI + uvicorn and a raw Tornado handler.

    python benchmarks/run.py --runs 3 --out docs/benchmarks.md

Runs every scenario of the performance issue on every system, interleaving the systems run by run
(each run visits them in a rotated order, so slow drift on a shared machine spreads over all of
them), and writes min / median / max per figure, the litkit/peer ratios and the issue's floors
(PASS/FAIL) into the generated block of ``--out``; hand-written sections of that file stay. The
peers' virtual environments are created under ``benchmarks/.venvs/`` on first use.
``--quick`` is the smoke mode of the test suite: litkit and raw Tornado only, one short run.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import traceback
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # the sibling modules, and this checkout's litkit

import psutil  # noqa: E402

import load  # noqa: E402
import report  # noqa: E402
import scenarios  # noqa: E402
from scenarios import Settings  # noqa: E402
from systems import SYSTEMS, System  # noqa: E402

QUICK = Settings(duration=1, warmup=0, concurrencies=(1, 8), two_worker_concurrencies=(8,), stream_trials=1, idle_first_chunk_trials=1, cancel_trials=1, cancel_stream_s=1.0, queued_tick=0.2, startup_workers=2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per system (default 3)")
    parser.add_argument("--out", help="markdown file whose generated block to replace (or append)")
    parser.add_argument("--json", help="also write every run's raw figures here")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {', '.join(SYSTEMS)}")
    parser.add_argument("--duration", type=int, default=Settings.duration, help="seconds per wrk measurement")
    parser.add_argument("--quick", action="store_true", help="smoke mode: litkit and raw Tornado, one short run")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, got {args.runs}")
    if args.duration < 1:
        parser.error(f"--duration is whole seconds for wrk, at least 1; got {args.duration}")
    names = ["litkit", "tornado"] if args.quick else [name.strip() for name in args.systems.split(",") if name.strip()]
    unknown = [name for name in names if name not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    settings = QUICK if args.quick else Settings(duration=args.duration)
    runs = 1 if args.quick else args.runs
    systems = [SYSTEMS[name] for name in names]
    for system in systems:
        system.prepare(log=_log)

    started = time.time()
    results, notes = measure(systems, settings, runs)
    meta = describe(systems, settings, runs, " ".join(["python benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]), time.time() - started)
    fill = {"cancel_stream_s": settings.cancel_stream_s, "wait_s": settings.wait_s, "queued_tick": settings.queued_tick, "startup_workers": settings.startup_workers}
    block = report.render(results, meta, fill)
    if notes:
        block = block.replace(report.END, "Failures while measuring:\n\n" + "\n".join(f"- {note}" for note in notes) + "\n\n" + report.END)
    print(block)
    if args.out:
        report.write(args.out, block)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"meta": meta, "results": results, "notes": notes}, out, indent=1)
    return 1 if notes else 0


def measure(systems: list[System], settings: Settings, runs: int) -> tuple[report.Results, list[str]]:
    results: report.Results = {system.name: defaultdict(list) for system in systems}
    notes: list[str] = []

    def record(system: System, label: str, scenario) -> None:  # type: ignore[no-untyped-def]
        began = time.perf_counter()
        try:
            figures = scenario()
        except Exception as error:  # one broken peer must not cost the whole comparison
            notes.append(f"{system.name} {label}, run {run + 1}: {type(error).__name__}: {error}".replace("\n", " ")[:600])
            _log(traceback.format_exc())
            return
        for key, value in figures.items():
            results[system.name][key].append(value)
        _log(f"run {run + 1}/{runs} {system.name:8} {label:12} {time.perf_counter() - began:5.1f} s")

    widget_ready = _widget_available() and any(system.name == "litkit" for system in systems)
    for run in range(runs):
        order = systems[run % len(systems) :] + systems[: run % len(systems)]
        for system in order:
            record(system, "echo", lambda: scenarios.echo(system, settings))
            record(system, "echo x2", lambda: scenarios.echo_two_workers(system, settings))
            record(system, "start-up", lambda: scenarios.startup_many(system, settings))
            record(system, "tokens", lambda: scenarios.tokens(system, settings, run))
            record(system, "queued", lambda: scenarios.queued_plain(system, settings, run))
        if widget_ready:
            litkit = SYSTEMS["litkit"]
            for shown in (run % 2 == 0, run % 2 == 1):
                record(litkit, "widget", lambda: scenarios.widget(litkit, settings, shown))
    return {name: dict(figures) for name, figures in results.items()}, notes


def _widget_available() -> bool:
    import litkit.server

    return hasattr(litkit.server.Server, "widget")


def describe(systems: list[System], settings: Settings, runs: int, command: str, elapsed: float) -> dict[str, str]:
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"`{command}` ({elapsed / 60:.1f} min)",
        "machine": f"{_cpu_model()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
        f"Linux {platform.release()}; Python {platform.python_version()}; load average at the end {os.getloadavg()[0]:.2f}",
        "versions": "; ".join(system.version() for system in systems),
        "load generators": f"{load.wrk_version()} (`-t1 --latency`, Lua POST script) for echo: C, one epoll thread, so the "
        "generator costs the 2 shared cores far less than the servers do; a Python client would be the bottleneck "
        "at these rates. Streams, time to first chunk, cancellation and the queued request use "
        "`benchmarks/load.py`'s asyncio raw-socket client (TCP_NODELAY, perf_counter/monotonic clocks), "
        "because wrk cannot time the first chunk, hang up after 10 chunks or abandon a request",
        "runs": f"{runs} per system, systems interleaved run by run; min / **median** / max; ratios are litkit's "
        f"median over the peer's (for times and memory, lower is better); {settings.duration:g} s per wrk "
        f"measurement after {settings.warmup} s of warm-up",
    }
    if not _widget_available():
        meta["dashboard"] = "PENDING: `server.widget` is not on this branch yet; the scenario runs once it is (`scenarios.widget`)"
    return meta


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
