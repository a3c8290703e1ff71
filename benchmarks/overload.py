"""A new stream's first chunk while the machine is overloaded by other streams, with litkit's longer
time slice and with the kernel's (``LITKIT_SLICE_MS=0``), runs alternating.

    python benchmarks/overload.py [--runs 6]

Each run: a litkit server (``benchmarks/peers/litkit_app.py``, workload ``tokens``, 4 workers,
started as the harness starts it: ``servers.RunningApp``) in its own process; three client
processes pull 20,000-chunk streams back to back for 4 s; meanwhile a probe process times the
first chunk of 30 five-chunk streams, 50 ms apart. Prints the probe's
median and 90th percentile per run. On 2 cores this is an overload on purpose: it shows what a
task that *wakes* with a long slice pays. See docs/benchmarks.md, "Time to first chunk under a
flat-out stream".
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from servers import RunningApp
from systems import SYSTEMS

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
    with RunningApp(SYSTEMS["litkit"], "tokens", workers=4, environ={"LITKIT_SLICE_MS": slice_ms}) as app:
        load = [subprocess.Popen([sys.executable, "-c", CLIENT, str(app.port), "load"]) for _ in range(3)]
        try:
            probe = subprocess.run([sys.executable, "-c", CLIENT, str(app.port), "probe"], capture_output=True, text=True, timeout=120, check=True)
            return sorted(json.loads(probe.stdout))
        finally:
            for process in load:
                process.wait(60)


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
