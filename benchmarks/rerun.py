"""Re-running serve() under load: what clients that call without pause see (issue 24).

    python benchmarks/rerun.py [--rounds 3] [--seconds 4] [--setup 0.5]

Each round serves a JSON endpoint and a streaming one (20 chunks, 5 ms apart) on one port, and
four client threads call them without pause: each endpoint over one keep-alive connection and
over a new connection per request. Two windows of ``--seconds`` each, side by side in the round:
one without a re-run, then one with ``serve()`` called again on the port in its middle, with
edited code whose ``setup()`` takes ``--setup`` seconds. Per round it prints:

- requests answered in each window, and how many were in flight when the re-run began;
- failures in the re-run window: errors, non-200 answers, streams cut or of two versions (must be 0);
- the longest JSON request and the longest stream (to its last chunk) in each window, and the
  ratio re-run / none;
- how long serve() took, and the time from the serve() call to the first answer of the new version.

Only client-side figures: it runs against any litkit (``PYTHONPATH=<a checkout>``), so the
figures before the change can be taken with the same command.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time

import litkit
from litkit.server.registry import stop_all

CHUNKS = 20


class Versioned(litkit.LitAPI):
    def __init__(self, version: int, setup_s: float = 0.0) -> None:
        self.version = version
        self.setup_s = setup_s

    def setup(self, device):
        time.sleep(self.setup_s)  # loading a model

    def predict(self, x):
        return {"version": self.version}


class VersionedStream(Versioned):
    def predict(self, x):
        for index in range(CHUNKS):
            time.sleep(0.005)
            yield {"version": self.version, "index": index}


def endpoints(version: int, setup_s: float = 0.0) -> dict[str, litkit.LitAPI]:
    return {"/json": Versioned(version, setup_s), "/stream": VersionedStream(version, setup_s)}


class Clients:
    """Four threads calling without pause; each answer as (path, sent, finished, version), each
    failure as text."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.address = (host, int(port))
        self.answers: list[tuple[str, float, float, int]] = []
        self.failures: list[str] = []
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(path, keep_alive)) for path in ("/json", "/stream") for keep_alive in (True, False)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, path: str, keep_alive: bool) -> None:
        connection = None
        while not self._done.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(*self.address, timeout=30)
            sent = time.monotonic()
            try:
                connection.request("POST", path, body=b"{}", headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                body = response.read()
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}")
                if path == "/json":
                    version = json.loads(body)["version"]
                else:
                    chunks = [json.loads(line) for line in body.splitlines()]
                    if [c.get("index") for c in chunks] != list(range(CHUNKS)) or len({c.get("version") for c in chunks}) != 1:
                        raise RuntimeError(f"a stream cut after {len(chunks)} of {CHUNKS} chunks, or of two versions")
                    version = chunks[0]["version"]
                self.answers.append((path, sent, time.monotonic(), version))
            except Exception as error:  # noqa: BLE001 - counted: this is what the benchmark measures
                self.failures.append(f"{path}: {type(error).__name__}: {error}")
                connection.close()
                connection = None
                continue
            if not keep_alive:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()


def longest(answers: list[tuple[str, float, float, int]], path: str, start: float, end: float) -> float:
    return max((finished - sent for p, sent, finished, _ in answers if p == path and start <= sent < end), default=float("nan"))


def one_round(seconds: float, setup_s: float) -> dict[str, float]:
    server = litkit.serve(endpoints(1), port=0)
    clients = Clients(server.url)
    try:
        time.sleep(1.0)  # warm: connections open, workers busy
        quiet_start = time.monotonic()
        time.sleep(seconds)
        rerun_window = time.monotonic()
        time.sleep(seconds / 2)
        rerun_began = time.monotonic()
        new = litkit.serve(endpoints(2, setup_s), port=server.port)
        rerun_returned = time.monotonic()
        time.sleep(max(0.0, rerun_window + seconds - time.monotonic()))
        window_end = time.monotonic()
    finally:
        clients.stop()
        stop_all()
    answers = clients.answers
    in_window = lambda start, end: sum(1 for _, sent, _, _ in answers if start <= sent < end)  # noqa: E731
    first_new = min((finished for _, _, finished, version in answers if version == 2), default=float("nan"))
    return {
        "answered_quiet": in_window(quiet_start, rerun_window),
        "answered_rerun": in_window(rerun_window, window_end),
        "in_flight_at_rerun": sum(1 for _, sent, finished, _ in answers if sent < rerun_began < finished),
        "failures": len(clients.failures),
        "json_max_quiet_ms": 1000 * longest(answers, "/json", quiet_start, rerun_window),
        "json_max_rerun_ms": 1000 * longest(answers, "/json", rerun_window, window_end),
        "stream_max_quiet_ms": 1000 * longest(answers, "/stream", quiet_start, rerun_window),
        "stream_max_rerun_ms": 1000 * longest(answers, "/stream", rerun_window, window_end),
        "serve_s": rerun_returned - rerun_began,
        "first_new_answer_s": first_new - rerun_began,
        "examples": clients.failures[:3],  # type: ignore[dict-item]
        "kept_url": float(new.url == server.url),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each window")
    parser.add_argument("--setup", type=float, default=0.5, help="seconds the new version's setup() takes")
    args = parser.parse_args()
    rounds = []
    for number in range(args.rounds):
        figures = one_round(args.seconds, args.setup)
        rounds.append(figures)
        print(f"round {number + 1}: " + ", ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()), flush=True)
    med = lambda key: statistics.median(r[key] for r in rounds)  # noqa: E731
    span = lambda key: f"{min(r[key] for r in rounds):.0f}-{max(r[key] for r in rounds):.0f}"  # noqa: E731
    print(f"\n{args.rounds} rounds, {args.seconds:g} s windows, 4 client threads, new version's setup() {args.setup:g} s; median (min-max)")
    print(f"requests answered, no re-run / with one:    {med('answered_quiet'):.0f} / {med('answered_rerun'):.0f}")
    print(f"in flight when the re-run began:            {med('in_flight_at_rerun'):.0f} ({span('in_flight_at_rerun')})")
    print(f"failures during the re-run window:          {span('failures')}")
    for kind in ("json", "stream"):
        quiet, rerun = med(f"{kind}_max_quiet_ms"), med(f"{kind}_max_rerun_ms")
        print(f"longest {kind:6} request, none / re-run:      {quiet:.1f} / {rerun:.1f} ms ({rerun / quiet:.2f}x)")
    print(f"serve() took:                               {med('serve_s'):.2f} s")
    print(f"first answer of the new version after:      {med('first_new_answer_s'):.2f} s from the serve() call")


if __name__ == "__main__":
    main()
