"""The load generators: wrk for echo throughput and latency, a small asyncio client for streams.

wrk (C, epoll, one thread here) is the fairest generator for echo: at thousands of requests per
second a Python client would spend as much CPU as the server under test, and this machine has two
cores for both. wrk cannot tell when the first chunk of a stream arrived, hang up after ten chunks,
or abandon a queued request, so those scenarios use ``StreamClient``: raw asyncio sockets with
TCP_NODELAY, timed with ``time.perf_counter()`` (durations) and ``time.monotonic()`` (instants
compared with the apps' event files; the same CLOCK_MONOTONIC in every process on Linux).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
WRK_SCRIPT = os.path.join(HERE, "wrk_post.lua")
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


class LoadError(RuntimeError):
    """A load generator could not run, or the server under test answered wrongly."""


def wrk_version() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise LoadError("wrk is not installed; install it with `apt-get install wrk` (Debian's package)")
    output = subprocess.run([wrk, "--version"], capture_output=True, text=True).stdout
    return output.split("[")[0].strip() or "wrk"


def wrk(url: str, concurrency: int, duration: int) -> dict[str, float]:
    """POST ``{"input": 1}`` at ``url`` over ``concurrency`` keep-alive connections for ``duration`` s.

    Returns rps, p50_ms, p99_ms, errors (socket errors plus non-2xx answers) and requests.
    """
    if duration < 1:
        raise LoadError(f"wrk runs for whole seconds, at least 1; got duration={duration}")
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--latency", "-s", WRK_SCRIPT, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 30)
    if result.returncode != 0:
        raise LoadError(f"{' '.join(command)} failed with status {result.returncode}: {result.stderr.strip()}")
    return parse_wrk(result.stdout)


def parse_wrk(output: str) -> dict[str, float]:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match is None:
            raise LoadError(f"wrk printed no {percent}% latency; its output was:\n{output}")
        return float(match.group(1)) * _UNITS[match.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rps is None:
        raise LoadError(f"wrk printed no Requests/sec; its output was:\n{output}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    requests = re.search(r"(\d+) requests in", output)
    return {
        "rps": float(rps.group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": float(errors),
        "requests": float(requests.group(1)) if requests else math.nan,
    }


@dataclass
class StreamResult:
    status: int
    lines: int  # NDJSON lines received (one per token)
    first_line_s: float | None  # from sending the request to the first complete line
    total_s: float  # from sending the request to the end (or the hang-up)


class _ChunkedBody:
    """Incremental decoder of an HTTP/1.1 body, chunked or with Content-Length."""

    def __init__(self, head: bytes) -> None:
        lowered = head.lower()
        self.chunked = b"transfer-encoding: chunked" in lowered
        length = re.search(rb"content-length:\s*(\d+)", lowered)
        self.remaining = int(length.group(1)) if length and not self.chunked else None
        self.buffer = b""
        self.chunk_left = 0
        self.done = not self.chunked and self.remaining == 0

    def feed(self, data: bytes) -> bytes:
        """Return the payload bytes in ``data``; sets ``done`` at the end of the body."""
        if not self.chunked:
            if self.remaining is not None:
                self.remaining -= len(data)
                self.done = self.remaining <= 0
            return data
        self.buffer += data
        payload = []
        while True:
            if self.chunk_left:
                take = self.buffer[: self.chunk_left]
                payload.append(take)
                self.buffer = self.buffer[len(take) :]
                self.chunk_left -= len(take)
                if self.chunk_left:
                    break
                continue
            if self.buffer.startswith(b"\r\n"):
                self.buffer = self.buffer[2:]
            end = self.buffer.find(b"\r\n")
            if end < 0:
                break
            size = int(self.buffer[:end].split(b";")[0], 16)
            self.buffer = self.buffer[end + 2 :]
            if size == 0:
                self.done = True
                break
            self.chunk_left = size
        return b"".join(payload)


class StreamClient:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads NDJSON streams."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, payload: dict, path: str = "/predict") -> None:
        body = json.dumps(payload).encode()
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
        if self.writer is None:
            raise LoadError("send() before connect()")
        self.writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)

    async def request(self, payload: dict, stop_after: int | None = None) -> StreamResult:
        """Send ``payload`` and read the answer; with ``stop_after``, hang up after that many lines."""
        if self.reader is None:
            await self.connect()
        reader = self.reader
        if reader is None:
            raise LoadError("connect() left no reader")
        started = time.perf_counter()
        self.send(payload)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        body = _ChunkedBody(head)
        lines, first = 0, None
        while not body.done:
            data = await reader.read(65536)
            if not data:
                raise LoadError(f"the server closed the connection mid-answer after {lines} lines")
            count = body.feed(data).count(b"\n")
            if count and first is None:
                first = time.perf_counter() - started
            lines += count
            if stop_after is not None and lines >= stop_after:
                break
        if status == 200 and first is None and not (stop_after is not None and lines >= stop_after):
            first = time.perf_counter() - started  # a plain JSON answer: its body is the first "line"
        return StreamResult(status, lines, first, time.perf_counter() - started)

    def hang_up(self) -> float:
        """Close the connection now; return the instant (``time.monotonic()``) of the hang-up.

        ``shutdown()`` sends the FIN at once; the transport's own close would wait a loop turn.
        """
        if self.writer is not None:
            try:
                self.writer.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            hung_up = time.monotonic()
            self.writer.close()
            self.reader = self.writer = None
            return hung_up
        self.reader = self.writer = None
        return time.monotonic()

    async def close(self) -> None:
        if self.writer is not None:
            writer = self.writer
            self.hang_up()
            try:
                await writer.wait_closed()
            except OSError:
                pass
