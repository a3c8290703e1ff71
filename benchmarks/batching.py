"""What dynamic batching buys for a model whose cost is per call, not per input (a GPU forward
pass, a vectorised scikit-learn model): throughput and latency with and without batching.

Run on demand (not part of the test suite):

    python benchmarks/batching.py [--call-ms 5] [--concurrency 32] [--duration 3]

The model sleeps ``--call-ms`` per ``predict`` call whatever the batch size. One worker; the load
generator is wrk, as for echo in ``benchmarks/run.py`` (``load.wrk``: keep-alive connections,
``{"input": 1}`` bodies).
"""

from __future__ import annotations

import argparse
import time

import litkit
from load import wrk


class PerCallCost(litkit.LitAPI):
    def __init__(self, call_s: float, batched: bool) -> None:
        self.call_s = call_s
        self.batched = batched

    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        time.sleep(self.call_s)
        return [value * 2 for value in x] if self.batched else x * 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--call-ms", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=int, default=3, help="seconds of wrk per setting (whole seconds)")
    args = parser.parse_args()
    print(f"model: {args.call_ms:g} ms per predict call; {args.concurrency} clients, {args.duration} s each, one worker")
    print("| max_batch_size | batch_timeout | req/s | p50 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for size, timeout in ((1, 0.0), (8, 0.0), (16, 0.0), (16, 0.005), (32, 0.005)):
        api = PerCallCost(args.call_ms / 1000, batched=size > 1)
        with litkit.serve(api, port=0, max_batch_size=size, batch_timeout=timeout) as server:
            url = server.url + server.api_path
            wrk(url, args.concurrency, 1)  # warm up
            result = wrk(url, args.concurrency, args.duration)
        print(f"| {size} | {timeout:g} | {result['rps']:.0f} | {result['p50_ms']:.1f} | {result['p99_ms']:.1f} |")


if __name__ == "__main__":
    main()
