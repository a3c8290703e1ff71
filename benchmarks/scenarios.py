"""The scenarios of the performance issue, each measured on one system for one run.

Every function starts the app(s) it needs, measures, stops them, and returns ``{figure: value}``;
``run.py`` calls them system by system, run by run, and ``report.py`` names the figures. A value
is ``nan`` when a system cannot be measured that way (say why in the report's notes).
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass

import psutil

import load
from load import LoadError, StreamClient
from servers import RunningApp
from systems import System

NAN = float("nan")


@dataclass(frozen=True)
class Settings:
    duration: int = 3  # seconds per wrk measurement (wrk takes whole seconds)
    warmup: int = 1  # seconds of wrk before the first measurement of a server; 0 for none
    concurrencies: tuple[int, ...] = (1, 8, 64)
    two_worker_concurrencies: tuple[int, ...] = (8, 64)
    stream_chunks: int = 10_000
    stream_trials: int = 5  # per run, 0.1 s apart; the run reports their median
    idle_first_chunk_trials: int = 5  # per run, 20 ms each; the run reports their median
    cancel_trials: int = 3  # per run and per tick; the run reports their median
    cancel_stream_s: float = 1.0  # an uncancelled stream in the cancellation scenario lasts this long
    queued_tick: float = 0.5  # the running and the abandoned request each take 2 ticks
    startup_workers: int = 4
    wait_s: float = 3.0  # how long to wait for a `finally` before calling it "never"


def echo(system: System, settings: Settings) -> dict[str, float]:
    """One worker: start-up to first 200, idle memory, echo throughput and latency per concurrency."""
    figures: dict[str, float] = {}
    with RunningApp(system, "echo") as app:
        figures["ready_s"] = app.ready_s
        figures["serve_s"] = app.serve_s if app.serve_s is not None else NAN
        time.sleep(0.5)  # let the start-up settle before reading memory
        figures.update(_memory(app))
        _warm_up(app, settings)
        errors = 0.0
        for concurrency in settings.concurrencies:
            before = _cpu_seconds(app)
            result = load.wrk(app.url, concurrency, settings.duration)
            if concurrency == 8:
                # CPU time per request barely moves with the machine's load, unlike req/s.
                after = _cpu_seconds(app)
                server = after.get("server", 0.0) - before.get("server", 0.0)
                total = sum(after.values()) - sum(before.values())
                figures["cpu_server_us"] = 1e6 * server / result["requests"]
                figures["cpu_total_us"] = 1e6 * total / result["requests"]
            errors += result["errors"]
            for key in ("rps", "p50_ms", "p99_ms"):
                figures[f"echo_c{concurrency}_{key}"] = result[key]
        figures["echo_errors"] = errors
    return figures


def _cpu_seconds(app: RunningApp) -> dict[str, float]:
    """User + system CPU seconds so far: ``server`` for the app's own process and the children that
    are not litkit workers (litkit on Python 3.10-3.12 serves from a process of its own, a child of
    the app's: counting the app's process alone gave litkit's server 0 us a request), then each
    worker by pid."""
    seconds = {"server": 0.0}
    for index, process in enumerate(app.processes()):
        try:
            times = process.cpu_times()
            worker = index > 0 and "litkit.worker" in " ".join(process.cmdline())
        except psutil.Error:
            continue
        if worker:
            seconds[str(process.pid)] = times.user + times.system
        else:
            seconds["server"] += times.user + times.system
    return seconds


def _warm_up(app: RunningApp, settings: Settings) -> None:
    if settings.warmup:
        load.wrk(app.url, 8, settings.warmup)


def _memory(app: RunningApp) -> dict[str, float]:
    rows = app.memory()
    server = rows[0]
    others = rows[1:]
    return {
        "server_rss_mib": float(server["rss_mib"]),
        "server_uss_mib": float(server["uss_mib"]),
        "worker_uss_mib": max((float(row["uss_mib"]) for row in others), default=NAN),
        "worker_rss_mib": max((float(row["rss_mib"]) for row in others), default=NAN),
        "total_uss_mib": sum(float(row["uss_mib"]) for row in rows),
        "processes": float(len(rows)),
    }


def echo_two_workers(system: System, settings: Settings) -> dict[str, float]:
    """Two workers (processes for the one-process peers): echo throughput at concurrency 8 and 64."""
    with RunningApp(system, "echo", workers=2) as app:
        _warm_up(app, settings)
        return {f"echo2w_c{c}_rps": load.wrk(app.url, c, settings.duration)["rps"] for c in settings.two_worker_concurrencies}


def startup_many(system: System, settings: Settings) -> dict[str, float]:
    """Start-up with ``settings.startup_workers`` workers: to first 200, and litkit's ``serve()``."""
    with RunningApp(system, "echo", workers=settings.startup_workers) as app:
        figures = {"ready_many_s": app.ready_s, "serve_many_s": app.serve_s if app.serve_s is not None else NAN}
        time.sleep(0.5)
        memory = _memory(app)
        figures["many_worker_uss_mib"] = memory["worker_uss_mib"]
        figures["many_total_uss_mib"] = memory["total_uss_mib"]
        return figures


def widget(system: System, settings: Settings, shown: bool) -> dict[str, float]:
    """Echo at concurrency 8 with litkit's dashboard widget created (shown) or not: req/s, CPU/request."""
    with RunningApp(system, "echo", widget="shown" if shown else "hidden") as app:
        if app.widget_state != ("shown" if shown else "hidden"):
            raise LoadError(f"the litkit app reported widget={app.widget_state!r}, not the one asked for")
        _warm_up(app, settings)
        state = "shown" if shown else "hidden"
        before = _cpu_seconds(app)
        result = load.wrk(app.url, 8, settings.duration)
        spent = sum(_cpu_seconds(app).values()) - sum(before.values())
        return {f"widget_{state}_rps": result["rps"], f"widget_{state}_cpu_us": 1e6 * spent / result["requests"]}


def tokens(system: System, settings: Settings, run: int) -> dict[str, float]:
    """One ``tokens`` server: the 10,000-chunk stream, cancellation at 1 and 20 ms, the queued request."""
    with tempfile.TemporaryDirectory() as folder:
        events = os.path.join(folder, "events")
        with RunningApp(system, "tokens", events=events) as app:
            return asyncio.run(_tokens(app, events, settings, run))


async def _tokens(app: RunningApp, events: str, settings: Settings, run: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    figures.update(await _stream(app, settings))
    for tick_ms in (1, 20):
        figures.update(await _cancellation(app, events, settings, tick_ms, run))
    figures.update(await _queued(app, events, settings, run, "queued"))
    return figures


def queued_plain(system: System, settings: Settings, run: int) -> dict[str, float]:
    """The abandoned queued request again, on a non-streaming endpoint (``work``)."""
    with tempfile.TemporaryDirectory() as folder:
        events = os.path.join(folder, "events")
        with RunningApp(system, "work", events=events) as app:
            return asyncio.run(_queued(app, events, settings, run, "plain_queued"))


async def _stream(app: RunningApp, settings: Settings) -> dict[str, float]:
    client = StreamClient("127.0.0.1", app.port)
    try:
        await client.request({"n": 100})  # warm the connection and the worker
        rates, firsts = [], []
        for _ in range(settings.stream_trials):
            await asyncio.sleep(0.1)  # back to back, the previous stream's tail still costs the next one's first chunk
            result = await client.request({"n": settings.stream_chunks})
            if result.status != 200 or result.lines != settings.stream_chunks or result.first_line_s is None:
                raise LoadError(f"{app.system.name}: the stream answered {result.status} with {result.lines} of {settings.stream_chunks} lines")
            rates.append(result.lines / result.total_s)
            firsts.append(1000 * result.first_line_s)
        # The same path with the CPU free after the first token: one token, then the generator
        # sleeps. Apart from the 10,000-chunk figure, this shows the path's own latency.
        idle_firsts = []
        for _ in range(settings.idle_first_chunk_trials):
            result = await client.request({"n": 2, "tick": 0.02})
            if result.first_line_s is None:
                raise LoadError(f"{app.system.name}: a two-token stream answered {result.status} with no line")
            idle_firsts.append(1000 * result.first_line_s)
    finally:
        await client.close()
    return {
        "stream_chunks_per_s": statistics.median(rates),
        "stream_ttfc_ms": statistics.median(firsts),
        "stream_ttfc_idle_ms": statistics.median(idle_firsts),
    }


async def _cancellation(app: RunningApp, events: str, settings: Settings, tick_ms: int, run: int) -> dict[str, float]:
    """The client reads 10 chunks of a stream yielding every ``tick_ms``, then hangs up."""
    tick = tick_ms / 1000
    after, finally_ms, next_ms = [], [], []
    for trial in range(settings.cancel_trials):
        tag = f"cancel{tick_ms}-{run}-{trial}"
        client = StreamClient("127.0.0.1", app.port)
        await client.request({"n": int(settings.cancel_stream_s / tick), "tick": tick, "tag": tag}, stop_after=10)
        hung_up = client.hang_up()
        following = StreamClient("127.0.0.1", app.port)  # "is the next request served at once?"
        try:
            result = await asyncio.wait_for(following.request({"n": 1}), timeout=settings.cancel_stream_s + 10)
        finally:
            await following.close()
        next_ms.append(1000 * (time.monotonic() - hung_up) if result.status == 200 else math.inf)
        finished = await _wait_for_event(events, "finally", tag, settings.wait_s)
        finally_ms.append(1000 * (finished - hung_up) if finished is not None else math.inf)
        after.append(float(sum(1 for kind, _, at in _events(events, tag) if kind == "yield" and at > hung_up)))
    prefix = f"cancel{tick_ms}"
    return {
        f"{prefix}_after": statistics.median(after),
        f"{prefix}_finally_ms": statistics.median(finally_ms),
        f"{prefix}_next_ms": statistics.median(next_ms),
    }


async def _queued(app: RunningApp, events: str, settings: Settings, run: int, prefix: str) -> dict[str, float]:
    """A runs; B queues behind it and its client leaves after 100 ms; C comes next. Does B run?"""
    tick = settings.queued_tick
    running, abandoned, following = (StreamClient("127.0.0.1", app.port) for _ in range(3))
    tags = [f"{prefix}{run}-{name}" for name in "ABC"]

    def job(tag: str, ticks: int) -> dict:
        return {"n": ticks, "tick": tick, "tag": tag} if app.app == "tokens" else {"seconds": ticks * tick, "tag": tag}

    try:
        first = asyncio.create_task(running.request(job(tags[0], 2)))
        if await _wait_for_event(events, "start", tags[0], settings.wait_s) is None:
            raise LoadError(f"{app.system.name}: the first request of the queued scenario never started")
        second = asyncio.create_task(abandoned.request(job(tags[1], 2)))
        await asyncio.sleep(0.1)
        second.cancel()
        abandoned.hang_up()
        await asyncio.gather(second, return_exceptions=True)
        await asyncio.sleep(0.05)
        third = await following.request(job(tags[2], 0) if app.app == "work" else {"n": 1, "tag": tags[2]})
        served = time.monotonic()
        await first
        if third.status != 200:
            raise LoadError(f"{app.system.name}: the request after the abandoned one answered {third.status}")
        # If B runs at all, it starts within two ticks after A's end (or after C's).
        await _wait_for_event(events, "start", tags[1], 2 * tick + 0.5)
        await _wait_for_event(events, "finally", tags[1], 2 * tick + 0.5)
    finally:
        for client in (running, abandoned, following):
            await client.close()
    ended = [at for kind, _, at in _events(events, tags[0]) if kind == "finally"]
    ran = any(kind == "start" for kind, _, _ in _events(events, tags[1]))
    # C answered before A ended means C never queued (a thread pool runs both at once): no wait.
    return {f"{prefix}_ran": 1.0 if ran else 0.0, f"{prefix}_next_wait_s": max(0.0, served - ended[0]) if ended else NAN}


def _events(path: str, tag: str) -> list[tuple[str, str, float]]:
    try:
        with open(path) as log:
            lines = log.read().splitlines()
    except FileNotFoundError:
        return []
    rows = [line.split() for line in lines]
    return [(kind, name, float(at)) for kind, name, at in rows if name == tag]


async def _wait_for_event(path: str, kind: str, tag: str, timeout: float) -> float | None:
    """The instant of the first ``kind`` event of ``tag``, polling every 1 ms; None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event_kind, _, at in _events(path, tag):
            if event_kind == kind:
                return at
        await asyncio.sleep(0.001)
    return None
