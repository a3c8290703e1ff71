"""LitAPI classes the tests serve.

conftest registers this module with cloudpickle by value, the way classes from a notebook cell or a
script's ``__main__`` travel: workers never import the test suite (or pytest, or tornado).
Hooks record what they did in an event file (one line per event, with CLOCK_MONOTONIC timestamps,
which are comparable across processes on Linux) so tests can assert on what ran in the worker.
"""

from __future__ import annotations

import json
import os
import sys
import time

import litkit


def record(path: str | None, event: str, **fields: object) -> None:
    if path is None:
        return
    line = json.dumps({"event": event, "t": time.monotonic(), "pid": os.getpid(), **fields})
    with open(path, "a") as log:
        log.write(line + "\n")


def wait_for_file(path: str, deadline_s: float = 10.0) -> bool:
    deadline = time.monotonic() + deadline_s
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


class Doubler(litkit.LitAPI):
    def setup(self, device):
        self.k = 2

    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        return x * self.k

    def encode_response(self, output):
        return {"output": output}


class Echo(litkit.LitAPI):
    """Echoes the body; records each request (by its "tag") and each setup in the event file."""

    def __init__(self, events=None, setup_delay=0.0):
        self.events = events
        self.setup_delay = setup_delay

    def setup(self, device):
        time.sleep(self.setup_delay)
        record(self.events, "setup", device=device)

    def decode_request(self, request):
        if isinstance(request, dict) and "tag" in request:
            record(self.events, "request", tag=request["tag"])
        return request

    def predict(self, x):
        if isinstance(x, dict) and "wait_for" in x:  # hold the worker until the test says go
            wait_for_file(x["wait_for"])
        if isinstance(x, dict) and x.get("raise") == "http":
            raise litkit.HTTPError(422, "input must be a list")
        if isinstance(x, dict) and x.get("raise") == "value":
            raise ValueError("bad value 42")
        if isinstance(x, dict) and x.get("exit"):
            os._exit(x["exit"])
        if isinstance(x, dict) and x.get("modules"):
            return {"modules": sorted(m for m in ("tornado", "ipywidgets", "pytest") if m in sys.modules)}
        if isinstance(x, dict) and x.get("pid"):
            return {"pid": os.getpid()}
        return {"echo": x}


class Ticker(litkit.LitAPI):
    """Streams ``{"i": n}`` every ``interval`` seconds and records each yield and the finally."""

    def __init__(self, events=None):
        self.events = events

    def decode_request(self, request):
        record(self.events, "request", tag=request.get("tag"))
        return request

    def predict(self, x):
        interval = x.get("interval", 0.001)
        try:
            if "wait_for" in x:
                wait_for_file(x["wait_for"])
            for _ in range(x.get("sleep_steps", 0)):  # busy before the first chunk, never checking cancelled()
                time.sleep(0.01)
            for i in range(x.get("n", 100_000)):
                if x.get("fail_at") == i:
                    raise RuntimeError(f"failed at chunk {i}")
                record(self.events, "yield", i=i)
                yield i
                if interval:
                    time.sleep(interval)
        except GeneratorExit:
            record(self.events, "generator_exit")
            raise
        finally:
            record(self.events, "finally")

    def encode_response(self, output):
        for i in output:
            yield {"i": i}


class TextChunks(litkit.LitAPI):
    """Streams the strings it is sent, as is."""

    def predict(self, x):
        yield from x["chunks"]


class SlowUntilCancelled(litkit.LitAPI):
    """A non-streaming predict that loops until ``litkit.cancelled()`` turns True (bounded)."""

    def __init__(self, events=None):
        self.events = events

    def predict(self, x):
        record(self.events, "started")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if litkit.cancelled():
                record(self.events, "saw_cancelled")
                return {"cancelled": True}
            time.sleep(0.001)
        return {"cancelled": False}


class FailingSetup(litkit.LitAPI):
    def __init__(self, how="raise"):
        self.how = how

    def setup(self, device):
        if self.how == "raise":
            raise RuntimeError("model weights not found at /nowhere/model.bin")
        if self.how == "exit":
            os._exit(3)
        if self.how == "hang":
            time.sleep(60)

    def predict(self, x):
        return x
