"""LitAPI classes the tests serve.

conftest registers this module with cloudpickle by value, the way classes from a notebook cell or a
script's ``__main__`` travel: workers never import the test suite (or pytest, or tornado).
Hooks record what they did in an event file (one line per event, with CLOCK_MONOTONIC timestamps,
which are comparable across processes on Linux) so tests can assert on what ran in the worker.
"""

from __future__ import annotations

import io
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
            return {"modules": sorted(m for m in ("tornado", "ipywidgets", "pytest", "asyncio") if m in sys.modules)}
        if isinstance(x, dict) and x.get("pid"):
            return {"pid": os.getpid()}
        if isinstance(x, dict) and "print" in x:  # what user code prints, on either stream, even bytes
            for line in x["print"]:
                print(line)
            for line in x.get("stderr", []):
                print(line, file=sys.stderr)
            if x.get("junk"):
                os.write(1, bytes(range(256)) + b"\n")
            if x.get("flood"):
                os.write(2, b"x" * x["flood"])  # no newline at all
            sys.stdout.flush()
        return {"echo": x}


class FormSummary(litkit.LitAPI):
    """Answers what a form held: each plain field's value, each file's name, size and whether it
    was kept on disk (``litkit.wire.forms.SPOOL_FILE_BYTES``)."""

    def decode_request(self, request):
        if not isinstance(request, dict):
            return {"json": request}
        summary = {}
        for name, value in request.items():
            if isinstance(value, str):
                summary[name] = value
            else:
                summary[name] = {"filename": value.filename, "safe_filename": value.safe_filename, "size": value.size,
                                 "on_disk": not isinstance(value.file, io.BytesIO), "head": value.read(8).decode("latin-1")}
        return summary

    def predict(self, x):
        return x


class CrashingAuthorize(Doubler):
    """An authorize() hook with a bug: it raises a plain exception whose text holds a secret."""

    def authorize(self, request):
        raise RuntimeError("could not reach the token store with password=hunter2")


class ValueReturningAuthorize(Doubler):
    """``return token and compare(...)``: returns None without a token, "" with an empty one."""

    def authorize(self, request):
        token = request.headers.get("X-Token")
        return token and token == "right"


class RaisingOnlyAuthorize(Doubler):
    """LitServe's form: never returns a value; refusing is raising."""

    def authorize(self, request):
        if request.headers.get("X-Token") != "right":
            raise litkit.HTTPError(401, "wrong token")


class Ticker(litkit.LitAPI):
    """Streams ``{"i": n}`` every ``interval`` seconds and records each yield and the finally.

    With ``gate``, chunk ``n`` (after the first) is made only once the file ``<gate><n>`` exists
    (given up after ``wait_s``): the test paces the stream (``conftest.hang_up_mid_stream``)."""

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
                if i == 1 and "then_wait_for" in x:  # the stream under way, then held until the file exists
                    wait_for_file(x["then_wait_for"])
                if x.get("fail_at") == i:
                    raise RuntimeError(f"failed at chunk {i}")
                if i and "gate" in x and not wait_for_file(f"{x['gate']}{i}", x.get("wait_s", 10.0)):
                    return
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


class LoopHolder(Ticker):
    """A Ticker whose ``authorize`` (run on the server's event loop) holds that loop, for a request
    naming a file in ``X-Hold-Loop-Until``, until the file exists (at most 10 s): what happens
    meanwhile (a client's reset, a worker's output) reaches the loop in one turn."""

    def authorize(self, request):
        until = request.headers.get("X-Hold-Loop-Until")
        if until:
            record(self.events, "loop_held")
            wait_for_file(until)


class Gated(litkit.LitAPI):
    """Streams ``{"i": n}`` for n below ``n``, yielding the next only once the file ``<gate><n>`` of
    the one before exists: a reader that gets each chunk as it is sent can open the gate; behind a
    relay that buffers, the stream stalls (and ends after ``wait_s`` per chunk)."""

    def predict(self, x):
        for i in range(x["n"]):
            yield i
            if i + 1 < x["n"] and not wait_for_file(f"{x['gate']}{i}", x.get("wait_s", 10.0)):
                return

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


class BatchDoubler(litkit.LitAPI):
    """Doubles ``input``; records the size of every batch predict sees.

    ``{"input": x, "short": true}`` anywhere in a batch makes predict return one output too few.
    """

    def __init__(self, events=None):
        self.events = events

    def decode_request(self, request):
        if request.get("raise") == "http":
            raise litkit.HTTPError(422, "input must be a number")
        return request

    def predict(self, batch):
        record(self.events, "batch", size=len(batch), tags=[x.get("tag") for x in batch])
        if any(x.get("exit") for x in batch):
            os._exit(3)
        if any("wait_for" in x for x in batch):  # hold the worker until the test says go
            wait_for_file(next(x["wait_for"] for x in batch if "wait_for" in x))
        outputs = [x.get("input", 0) * 2 for x in batch]
        return outputs[:-1] if any(x.get("short") for x in batch) else outputs

    def encode_response(self, output):
        return {"output": output}


class NumpyBatch(litkit.LitAPI):
    """Decodes to numpy arrays, so the default batch() stacks them; reports the batch's shape."""

    def decode_request(self, request):
        import numpy

        return numpy.asarray(request["vector"], dtype=float)

    def predict(self, batch):
        return [{"row_sum": float(row.sum()), "batch_shape": list(batch.shape), "type": type(batch).__name__} for row in batch]


class BatchTicker(litkit.LitAPI):
    """A batched stream: each step yields one ``{"i", "tag"}`` per request; records the finally."""

    def __init__(self, events=None):
        self.events = events

    def predict(self, batch):
        record(self.events, "batch", size=len(batch), tags=[x.get("tag") for x in batch])
        try:
            for i in range(max(x.get("n", 100_000) for x in batch)):
                record(self.events, "yield", i=i)
                yield [{"i": i, "tag": x.get("tag")} for x in batch]
                time.sleep(batch[0].get("interval", 0.002))
        except GeneratorExit:
            record(self.events, "generator_exit")
            raise
        finally:
            record(self.events, "finally")

    def unbatch(self, output):
        if any(item["tag"] == "short" for item in output):
            return output[:-1]
        return output

    def encode_response(self, output):
        for item in output:
            yield item


class DeviceReporter(litkit.LitAPI):
    """Reports (and records at setup) the device setup() received and the CUDA_VISIBLE_DEVICES its worker sees."""

    def __init__(self, events=None):
        self.events = events

    def setup(self, device):
        self.device = device
        self.visible_at_setup = os.environ.get("CUDA_VISIBLE_DEVICES")
        record(self.events, "setup", device=device, visible=self.visible_at_setup)

    def predict(self, x):
        return {"pid": os.getpid(), "device": self.device, "visible": self.visible_at_setup}


class AsyncSleeper(litkit.LitAPI):
    """``async def predict``: sleeps ``delay`` seconds; records start, end and a cancellation."""

    def __init__(self, events=None):
        self.events = events

    async def predict(self, x):
        import asyncio

        record(self.events, "started", tag=x.get("tag"))
        try:
            await asyncio.sleep(x.get("delay", 0))
        except asyncio.CancelledError:
            record(self.events, "cancelled_error", tag=x.get("tag"))
            raise
        finally:
            record(self.events, "finally", tag=x.get("tag"))
        if x.get("raise"):
            raise litkit.HTTPError(418, "async hooks raise HTTPError too")
        return {"tag": x.get("tag"), "pid": os.getpid(), "cancelled": litkit.cancelled()}


class AsyncTicker(litkit.LitAPI):
    """An async generator streaming ``{"i": n}`` every ``interval`` seconds; records how it ended.
    ``gate`` as for ``Ticker``, awaited (the worker's loop runs while it waits)."""

    def __init__(self, events=None):
        self.events = events

    async def predict(self, x):
        import asyncio

        try:
            for i in range(x.get("n", 100_000)):
                if i and "gate" in x:
                    deadline = time.monotonic() + x.get("wait_s", 10.0)
                    while not os.path.exists(f"{x['gate']}{i}"):
                        if time.monotonic() > deadline:
                            return
                        await asyncio.sleep(0.002)
                record(self.events, "yield", i=i, tag=x.get("tag"))
                yield {"i": i, "pad": "x" * x["pad"]} if "pad" in x else {"i": i}
                if x.get("interval", 0.001) is not None:  # None: never await between chunks
                    await asyncio.sleep(x.get("interval", 0.001))
        except GeneratorExit:
            record(self.events, "generator_exit", tag=x.get("tag"))
            raise
        except asyncio.CancelledError:
            record(self.events, "cancelled_error", tag=x.get("tag"))
            raise
        finally:
            record(self.events, "finally", tag=x.get("tag"))


class TorchDevice(litkit.LitAPI):
    """Puts a tensor on the device setup() receives (needs torch and a GPU)."""

    def setup(self, device):
        import torch

        self.tensor = torch.ones(2, device=device)

    def predict(self, x):
        import torch

        return {
            "device": str(self.tensor.device),
            "device_count": torch.cuda.device_count(),
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "sum": float((self.tensor * x["k"]).sum()),
        }


class FailingBatch(BatchTicker):
    """A batched stream whose batch() raises."""

    def batch(self, inputs):
        raise ValueError(f"cannot batch {len(inputs)} inputs")


class ChatWords(litkit.LitAPI):
    """An OpenAI chat API: streams the words of the last message back, one every ``interval``
    seconds (``max_tokens`` words when given, repeating them, then finish_reason "length"),
    recording each yield and the finally. The word "fail" raises ValueError when its turn comes."""

    def __init__(self, events=None, interval=0.001):
        self.events = events
        self.interval = interval

    def predict(self, request):
        words = request["messages"][-1]["content"].split()
        try:
            for i in range(request.get("max_tokens") or len(words)):
                if words[i % len(words)] == "fail":
                    raise ValueError("the model failed")
                record(self.events, "yield", i=i)
                yield ("" if i == 0 else " ") + words[i % len(words)]
                time.sleep(self.interval)
            if request.get("max_tokens"):
                yield {"content": "", "finish_reason": "length"}
        finally:
            record(self.events, "finally")


class ChatCounted(litkit.LitAPI):
    """An OpenAI chat API that streams the words of the last message and reports token counts:
    the prompt's words, and one token per word sent."""

    def predict(self, request):
        words = request["messages"][-1]["content"].split()
        for i, word in enumerate(words):
            yield ("" if i == 0 else " ") + word
        yield {"content": "", "usage": {"prompt_tokens": len(words), "completion_tokens": len(words)}}


class ChatOnce(litkit.LitAPI):
    """An OpenAI chat API whose predict returns the whole reply (no generator)."""

    def predict(self, request):
        return "you said: " + request["messages"][-1]["content"]


class Crasher(litkit.LitAPI):
    """Dies mid-request the way native code or an operator kills a process; else echoes.

    ``{"crash": "exit"}``: os._exit; ``"segv"``: a segfault in native code (ctypes reads address 0);
    ``"sigkill"``: kill -9 of itself. ``{"crash": ..., "after": n}`` on a streaming server dies
    after yielding n chunks. Setup fails once the file ``fail_setup_if`` exists.
    """

    def __init__(self, fail_setup_if=None, events=None):
        self.fail_setup_if = fail_setup_if
        self.events = events

    def setup(self, device):
        record(self.events, "setup")
        if self.fail_setup_if and os.path.exists(self.fail_setup_if):
            raise RuntimeError("the model file is corrupt")

    def predict(self, x):
        if isinstance(x, dict) and "crash" in x:
            crash(x["crash"])
        return {"echo": x, "pid": os.getpid()}


class StreamCrasher(litkit.LitAPI):
    """Streams ``{"i": n}``; dies (see ``crash``) after ``after`` chunks when asked to."""

    def predict(self, x):
        for i in range(x.get("n", 10)):
            if x.get("after") == i:
                crash(x["crash"])
            yield {"i": i}
            time.sleep(x.get("interval", 0.0))


def crash(how):
    import ctypes
    import signal

    sys.stdout.flush()
    if how == "exit":
        os._exit(3)
    if how == "segv":
        ctypes.string_at(0)
    if how == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise ValueError(f"unknown crash {how!r}")


class Runaway(litkit.LitAPI):
    """A predict that neither yields nor checks litkit.cancelled() for ``seconds`` (a stuck native call)."""

    def __init__(self, events=None):
        self.events = events

    def predict(self, x):
        record(self.events, "started", tag=x.get("tag"))
        if x.get("seconds"):
            deadline = time.monotonic() + x["seconds"]
            while time.monotonic() < deadline:
                time.sleep(0.01)
        return {"done": x.get("tag"), "pid": os.getpid()}


class Noisy(litkit.LitAPI):
    """Every hook floods stdout and stderr, at the Python level and straight into fds 1 and 2."""

    def setup(self, device):
        print("setup says hello " * 1000)
        os.write(2, b"\x00\xff\xfe binary junk on stderr \x01\x02\x03" * 100)

    def decode_request(self, request):
        print("decode " * 10_000)  # about 70 kB per request
        sys.stderr.write("stderr from decode_request\n" * 1000)
        return request

    def predict(self, x):
        junk = bytes(range(256)) * 64
        os.write(1, junk)  # raw bytes, including what looks like frame headers, into fd 1
        os.write(2, junk)
        sys.stdout.write("\x1b[31mred\x1b[0m\r\n" * 100)
        for i in range(x["n"]):
            print(f"chunk {i}", flush=True)
            os.write(1, b"\x17\x00\x00\x00\x05hello")  # a fake CHUNK frame header, then bytes
            yield {"i": i, "tag": x["tag"]}

    def encode_response(self, output):
        for chunk in output:
            sys.stderr.write(f"encoding {chunk}\n")
            yield chunk


class Forking(Crasher):
    """A ``Crasher`` whose worker leaves a forked descendant behind, the way a hook that calls
    ``os.fork()`` or a ``setup()`` that starts a ``multiprocessing.Process`` (fork is Linux's default
    start method before Python 3.14) does. ``how`` is ``"setup"`` (a fork-context
    ``multiprocessing.Process`` started in setup) or ``"request"`` (``os.fork()`` in predict, before
    the crash); the child records its pid as a ``forked`` event and sleeps for ``lifetime`` seconds."""

    def __init__(self, events_path, how="setup", lifetime=60.0):
        super().__init__()
        self.events_path = events_path
        self.how = how
        self.lifetime = lifetime

    def setup(self, device):
        if self.how == "setup":
            import multiprocessing

            self.helper = multiprocessing.get_context("fork").Process(target=_sleep_and_record, args=(self.events_path, self.lifetime), daemon=False)
            self.helper.start()

    def predict(self, x):
        if self.how == "request" and isinstance(x, dict) and "crash" in x:
            recorded, told = os.pipe()
            if os.fork() == 0:
                _sleep_and_record(self.events_path, self.lifetime, told)
                os._exit(0)
            os.read(recorded, 1)  # the child's pid is in the event file: now crash
        return super().predict(x)


def _sleep_and_record(events_path, lifetime, told=None):
    record(events_path, "forked")
    if told is not None:
        os.write(told, b"x")
    time.sleep(lifetime)


class AsyncStubborn(litkit.LitAPI):
    """``async def predict``: ``{"stubborn": true}`` swallows its cancellation and goes on (for up
    to a minute), the kind of hook ``cancel_grace`` kills; else sleeps ``delay`` and answers."""

    def __init__(self, events_path=None):
        self.events_path = events_path

    async def predict(self, x):
        import asyncio

        record(self.events_path, "started", tag=x.get("tag"))
        if not x.get("stubborn"):
            await asyncio.sleep(x.get("delay", 0))
            return {"tag": x.get("tag")}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                record(self.events_path, "ignored the cancel", tag=x.get("tag"))
        return {"tag": x.get("tag")}


def _generate_on_a_thread(out, steps, interval, events):
    """What ``model.generate`` with a streamer and a StoppingCriteria does: make a token, put it in
    the streamer's queue, then ask the criterion (here: ``litkit.cancelled()``) whether to stop."""
    made = 0
    while made < steps:
        time.sleep(interval)  # a forward pass
        made += 1
        out.put(made)
        if litkit.cancelled():
            break
    record(events, "thread_stopped", made=made)
    out.put(None)  # the streamer's end


class ThreadedGenerate(litkit.LitAPI):
    """A streaming predict that runs its "model" on a thread of its own (transformers'
    TextIteratorStreamer pattern), yields what the thread makes, and waits for it in finally."""

    def __init__(self, events=None, steps=500, interval=0.01):
        self.events, self.steps, self.interval = events, steps, interval

    def predict(self, x):
        import queue
        import threading

        out = queue.Queue()
        thread = threading.Thread(target=_generate_on_a_thread, args=(out, self.steps, self.interval, self.events))
        thread.start()
        try:
            while (token := out.get()) is not None:
                yield {"token": token}
        finally:
            thread.join()


class AsyncThreadedGenerate(ThreadedGenerate):
    """The same from an async predict: the thread starts through asyncio.to_thread, which carries
    the request's context to it (a plain threading.Thread would start with an empty one)."""

    async def predict(self, x):
        import asyncio
        import queue

        out = queue.Queue()
        generation = asyncio.ensure_future(asyncio.to_thread(_generate_on_a_thread, out, self.steps, self.interval, self.events))
        try:
            while (token := await asyncio.to_thread(out.get)) is not None:
                yield {"token": token}
        finally:
            await generation


class Versioned(litkit.LitAPI):
    """Answers which version of the code it is (a re-run serves a new one); ``setup_delay`` keeps
    the new version starting while the old one answers."""

    def __init__(self, version, setup_delay=0.0):
        self.version = version
        self.setup_delay = setup_delay

    def setup(self, device):
        time.sleep(self.setup_delay)

    def predict(self, x):
        return {"version": self.version, "pid": os.getpid(), "echo": x}


class VersionedStream(Versioned):
    """Streams ``chunks`` chunks, one every ``interval`` seconds, each naming its version and index;
    a request's ``wait_for`` (a path) holds it half-way until that file exists."""

    def __init__(self, version, setup_delay=0.0, chunks=20, interval=0.005):
        super().__init__(version, setup_delay)
        self.chunks = chunks
        self.interval = interval

    def predict(self, x):
        for index in range(self.chunks):
            if index == self.chunks // 2 and isinstance(x, dict) and "wait_for" in x:  # hold it mid-stream until the test says go
                wait_for_file(x["wait_for"])
            time.sleep(self.interval)
            yield {"version": self.version, "index": index}


class RowsTicker(litkit.LitAPI):
    """A batched stream in rows: request *i* gets ``{"i", "tag"}`` at each step until its own ``n``,
    then ``litkit.FINISHED``; each step records what ``litkit.cancelled(i)`` says for every row."""

    def __init__(self, events=None):
        self.events = events

    def predict(self, batch):
        record(self.events, "batch", size=len(batch), tags=[x.get("tag") for x in batch])
        for step in range(max(x.get("n", 100_000) for x in batch)):
            rows = [litkit.cancelled(i) for i in range(len(batch))]
            record(self.events, "step", step=step, cancelled=rows, all=litkit.cancelled())
            yield [{"i": step, "tag": x.get("tag")} if step < x.get("n", 100_000) else litkit.FINISHED for x in batch]
            time.sleep(batch[0].get("interval", 0.002))


class JoinTicker(litkit.LitAPI):
    """A batched stream that takes joiners (``joinable``, unless built with ``joinable=False``):
    request *i* gets ``{"i", "tag", "rows"}`` at each of its own ``n`` steps (``rows``: how many
    requests ``predict``'s list held at that step), then ``litkit.FINISHED``; ``predict`` returns
    once every request of its list is finished. Each call records a ``batch`` event, each step a
    ``step`` event with the list's length, tags and ``litkit.cancelled(i)`` for each."""

    joinable = True

    def __init__(self, events=None, joinable=True):
        self.events = events
        self.joinable = joinable

    def predict(self, batch):
        record(self.events, "batch", size=len(batch), tags=[x.get("tag") for x in batch])
        given: list[int] = []  # per request of the list: the items it received
        while True:
            given += [0] * (len(batch) - len(given))  # requests that joined since the last step
            if all(count >= x.get("n", 100_000) for count, x in zip(given, batch)):
                return
            items = []
            for i, x in enumerate(batch):
                if given[i] < x.get("n", 100_000):
                    items.append({"i": given[i], "tag": x.get("tag"), "rows": len(batch)})
                    given[i] += 1
                else:
                    items.append(litkit.FINISHED)
            cancelled = [litkit.cancelled(i) for i in range(len(batch))]
            record(self.events, "step", rows=len(batch), tags=[x.get("tag") for x in batch], cancelled=cancelled)
            yield items
            time.sleep(batch[0].get("interval", 0.002))


class ChatWordsBatched(litkit.LitAPI):
    """``ChatWords`` as a batched stream that takes joiners: request *i*'s reply is the words of its
    last message, one per step (``max_tokens`` words when given, repeating them, then
    finish_reason "length"), then ``litkit.FINISHED``. Each call records a ``batch`` event, each
    step a ``step`` event with the number of requests in ``predict``'s list."""

    joinable = True

    def __init__(self, events=None, interval=0.002):
        self.events = events
        self.interval = interval

    def predict(self, requests):
        record(self.events, "batch", size=len(requests))
        given: list[int] = []
        while True:
            given += [0] * (len(requests) - len(given))  # requests that joined since the last step
            lengths = [r.get("max_tokens") or len(r["messages"][-1]["content"].split()) for r in requests]
            if all(count > length for count, length in zip(given, lengths)):
                return
            items = []
            for i, (request, length) in enumerate(zip(requests, lengths)):
                words = request["messages"][-1]["content"].split()
                if given[i] < length:
                    items.append(("" if given[i] == 0 else " ") + words[given[i] % len(words)])
                elif given[i] == length and request.get("max_tokens"):
                    items.append({"content": "", "finish_reason": "length"})
                else:
                    items.append(litkit.FINISHED)
                given[i] += 1
            record(self.events, "step", rows=len(requests))
            yield items
            time.sleep(self.interval)


class BatchCancelWatcher(litkit.LitAPI):
    """A batched predict that does not stream: it waits (10 s at most) for the client of a request
    of its batch to leave, records what ``litkit.cancelled(i)`` says for each request (by tag) and
    ``litkit.cancelled()``, then answers each request its tag."""

    def __init__(self, events=None):
        self.events = events

    def predict(self, batch):
        record(self.events, "batch", size=len(batch), tags=[x.get("tag") for x in batch])
        deadline = time.monotonic() + 10
        rows = [False] * len(batch)
        while time.monotonic() < deadline and not any(rows):
            time.sleep(0.01)
            rows = [litkit.cancelled(i) for i in range(len(batch))]
        record(self.events, "rows", cancelled={x.get("tag"): row for x, row in zip(batch, rows)}, all=litkit.cancelled())
        return [{"tag": x.get("tag")} for x in batch]
