"""A new stream's first chunk while the machine is overloaded by other streams, with litkit's longer
time slice and with the kernel's (``LITKIT_SLICE_MS=0``), runs alternating.

    python benchmarks/overload.py [--runs 6]

Each run: a litkit server (``benchmarks/peers/litkit_app.py``, workload ``tokens``, 4 workers) in
its own process; three client processes pull 20,000-chunk streams back to back for 4 s; meanwhile
a probe process times the first chunk of 30 five-chunk streams, 50 ms apart. Prints the probe's
median and 90th percentile per run. On 2 cores this is an overload on purpose: it shows what a
task that *wakes* with a long slice pays. See docs/benchmarks.md, "Time to first chunk under a
flat-out stream".
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

CLIENT = r"""
import json, socket, sys, time
port, role = int(sys.argv[1]), sys.argv[2]
def stream(n):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = json.dumps({"n": n}).encode()
    sent = time.perf_counter()
    sock.sendall(f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    data = bytearray(sock.recv(1 << 18))
    first = time.perf_counter() - sent
    while not data.endswith(b"0\r\n\r\n"):
        data += sock.recv(1 << 18)
    sock.close()
    return first
if role == "load":
    until = time.monotonic() + 4
    while time.monotonic() < until:
        stream(20000)
else:
    time.sleep(0.5)
    firsts = []
    for _ in range(30):
        firsts.append(1000 * stream(5))
        time.sleep(0.05)
    print(json.dumps(firsts))
"""


def run(slice_ms: str) -> list[float]:
    port = _free_port()
    app = os.path.join(HERE, "peers", "litkit_app.py")
    env = dict(os.environ, LITKIT_SLICE_MS=slice_ms)
    server = subprocess.Popen([sys.executable, app, "--port", str(port), "--app", "tokens", "--workers", "4"], env=env, stdout=subprocess.PIPE, text=True)
    load: list[subprocess.Popen[str]] = []
    try:
        if server.stdout is None or not server.stdout.readline():  # one JSON line once ready
            raise RuntimeError("the litkit app exited before it was ready")
        load = [subprocess.Popen([sys.executable, "-c", CLIENT, str(port), "load"]) for _ in range(3)]
        probe = subprocess.run([sys.executable, "-c", CLIENT, str(port), "probe"], capture_output=True, text=True, timeout=120, check=True)
        return sorted(json.loads(probe.stdout))
    finally:
        for process in load:
            process.wait(60)
        server.terminate()
        server.wait(10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6)
    args = parser.parse_args()
    medians: dict[str, list[float]] = {"4": [], "0": []}
    for _ in range(args.runs):
        for slice_ms in medians:
            firsts = run(slice_ms)
            medians[slice_ms].append(statistics.median(firsts))
            print(f"LITKIT_SLICE_MS={slice_ms}: probe's first chunk median {medians[slice_ms][-1]:6.2f} ms, p90 {firsts[26]:6.2f} ms", flush=True)
    for slice_ms, values in medians.items():
        print(f"LITKIT_SLICE_MS={slice_ms}: medians {min(values):.2f}-{max(values):.2f} ms, median of runs {statistics.median(values):.2f} ms")


if __name__ == "__main__":
    main()
