"""When does a client read the first chunk of a flat-out stream? With and without litkit's longer
time slice (``LITKIT_SLICE_MS``), and with a client that asks for a short slice itself.

    python benchmarks/first_chunk.py [--streams 8] [--chunks 10000]

For each setting, in turn: a litkit server (``benchmarks/peers/litkit_app.py``, workload
``tokens``, started as the harness starts it: ``servers.RunningApp``) in its own process, and a raw-socket client in another that sends one request at a
time on one keep-alive connection and prints, per stream, the ms from sending the request to its
first ``recv`` and how many bytes that ``recv`` got (many: chunks piled up while the client waited
for a core). Linux only; the slice settings need Linux 6.12+. See docs/benchmarks.md, "Time to
first chunk under a flat-out stream".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from litkit.worker import timeslice  # noqa: E402
from servers import RunningApp  # noqa: E402
from systems import SYSTEMS  # noqa: E402

CLIENT = r"""
import ctypes, json, platform, socket, sys, time
port, streams, chunks, client_slice = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
if client_slice:  # struct sched_attr (48 bytes); sched_runtime is the slice of a SCHED_OTHER task
    fields = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32), ("flags", ctypes.c_uint64), ("nice", ctypes.c_int32),
              ("priority", ctypes.c_uint32), ("runtime", ctypes.c_uint64), ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64)]
    attr = type("SchedAttr", (ctypes.Structure,), {"_fields_": fields})(size=48, runtime=int(client_slice * 1e6))
    number = {"x86_64": 314, "aarch64": 274}[platform.machine()]
    if ctypes.CDLL(None).syscall(number, 0, ctypes.byref(attr), 0) != 0:
        sys.exit("sched_setattr failed")
out = []
sock = socket.create_connection(("127.0.0.1", port))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
body = json.dumps({"n": chunks}).encode()
request = f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
for _ in range(streams):
    time.sleep(0.1)  # the previous stream's tail must not cost this one's first chunk
    sent = time.perf_counter()
    sock.sendall(request)
    data = sock.recv(1 << 18)
    first = (1000 * (time.perf_counter() - sent), len(data))
    while not data.endswith(b"0\r\n\r\n"):
        data += sock.recv(1 << 18)
    out.append(first)
print(json.dumps(out))
"""


def measure(slice_ms: str, client_slice_ms: float, streams: int, chunks: int) -> list[tuple[float, int]]:
    with RunningApp(SYSTEMS["litkit"], "tokens", environ={"LITKIT_SLICE_MS": slice_ms}) as app:
        command = [sys.executable, "-c", CLIENT, str(app.port), str(streams), str(chunks), str(client_slice_ms)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
        return [tuple(row) for row in json.loads(result.stdout)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--chunks", type=int, default=10_000)
    args = parser.parse_args()
    print(f"kernel default slice here: {timeslice.current_slice_ms()} ms")
    settings = [
        (f"litkit slice {timeslice.SLICE_MS:g} ms (default)", str(timeslice.SLICE_MS), 0.0),
        ("LITKIT_SLICE_MS=0 (the kernel's)", "0", 0.0),
        ("LITKIT_SLICE_MS=0, client slice 0.1 ms", "0", 0.1),
    ]
    for name, slice_ms, client_slice in settings:
        rows = measure(slice_ms, client_slice, args.streams, args.chunks)
        firsts = [ms for ms, _ in rows]
        print(
            f"{name:42} first chunk read: median {statistics.median(firsts):5.2f} ms, "
            f"range {min(firsts):.2f}-{max(firsts):.2f}; first read sizes {[size for _, size in rows]}"
        )


if __name__ == "__main__":
    main()
