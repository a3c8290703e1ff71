"""LitAPI classes of the conformance suite (tests/contract_cases.py), one per feature of the hook
contract. Workers and Ray replicas import this module by reference (tests/ is on their sys.path),
so it imports litkit's worker side and pydantic only: never pytest, tornado or the test helpers.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from pydantic import BaseModel, Field

import litkit
from litkit.contract.callbacks import Callback, with_callbacks


def record(path: str | None, event: str, **fields: Any) -> None:
    """One line in the event file at ``path`` (see conftest.Events)."""
    if path is None:
        return
    with open(path, "a") as log:
        log.write(json.dumps({"event": event, "t": time.monotonic(), "pid": os.getpid(), **fields}) + "\n")


class Plain(litkit.LitAPI):
    def predict(self, x):
        return {"echo": x}


class WithContext(litkit.LitAPI):
    """LitServe's ``context``: one dict per request, shared by the hooks that declare it."""

    def decode_request(self, request, context):
        context["seen"] = ["decode"]
        return request["n"]

    def predict(self, x, context):
        context["seen"].append("predict")
        return x * 2

    def encode_response(self, output, context):
        return {"doubled": output, "seen": context["seen"] + ["encode"]}


class Person(BaseModel):
    name: str
    age: int = Field(ge=0)


class Greeting(BaseModel):
    text: str
    years_to_100: int


class Pydantic(litkit.LitAPI):
    """A pydantic request model (422 on a mismatch) and a pydantic response."""

    def decode_request(self, request: Person) -> Person:
        return request

    def predict(self, person: Person) -> Greeting:
        return Greeting(text=f"hello {person.name}", years_to_100=100 - person.age)


class Errors(litkit.LitAPI):
    """Each error of the mapping, chosen by the body."""

    def decode_request(self, request):
        if request.get("fail") == "decode":
            raise ValueError("no use for this body")
        return request

    def predict(self, x):
        fail = x.get("fail")
        if fail == "http":
            raise litkit.HTTPError(418, "short and stout")
        if fail == "fastapi":
            from fastapi import HTTPException

            raise HTTPException(status_code=409, detail={"why": "taken"})
        if fail == "value":
            raise ValueError("bad value 42")
        if fail == "json":
            return {"not json": object()}
        return {"ok": True}


class Embedder(litkit.LitAPI):
    """OpenAIEmbeddingSpec with LitAPI's own decode_request: predict receives the input, a str or a list."""

    def predict(self, inputs):
        texts = [inputs] if isinstance(inputs, str) else inputs
        return [[float(len(text)), 1.0] for text in texts]


class Chat(litkit.LitAPI):
    """OpenAI chat: the words of the last message, one per chunk."""

    def predict(self, request):
        for word in request["messages"][-1]["content"].split():
            yield word + " "


class Stream(litkit.LitAPI):
    """A stream of ``n`` chunks through ``encode_response``; ``fail_at`` raises at that chunk."""

    def __init__(self, events: str | None = None) -> None:
        super().__init__()
        self.events = events

    def predict(self, x):
        record(self.events, "start", n=x["n"])
        try:
            for index in range(x["n"]):
                if index == x.get("fail_at"):
                    raise RuntimeError(f"failed at {index}")
                time.sleep(x.get("interval", 0))
                yield index
        finally:
            record(self.events, "finally")

    def encode_response(self, output):
        for index in output:
            yield {"i": index}


class TextLines(litkit.LitAPI):
    """Text chunks with a newline: fine as SSE, not as an NDJSON line."""

    def predict(self, x):
        yield "one\ntwo"


class Async(litkit.LitAPI):
    async def decode_request(self, request):
        return request["n"]

    async def predict(self, x):
        return x + 1

    async def encode_response(self, output):
        return {"plus_one": output}


class AsyncStream(litkit.LitAPI):
    async def predict(self, x):
        for index in range(x["n"]):
            yield index

    async def encode_response(self, output):
        async for index in output:
            yield {"i": index}


class Batched(litkit.LitAPI):
    """``batch``/``predict``/``unbatch`` with ``context`` a list of the batch's dicts."""

    def decode_request(self, request, context):
        context["n"] = request["n"]
        return request["n"]

    def batch(self, inputs, context):
        return list(inputs)

    def predict(self, batch, context):
        return [{"tripled": n * 3, "batch_contexts": len(context)} for n in batch]

    def unbatch(self, output, context):
        return list(output)

    def encode_response(self, output, context):
        return {**output, "mine": context["n"]}


class Logs(litkit.LitAPI):
    """``self.log`` from a hook: the request still answers."""

    def predict(self, x):
        self.log("seen", x["n"])
        return {"logged": x["n"]}


class Recorder(Callback):
    """LitServe's callbacks around the hooks (as ``litkit.LitServer(callbacks=...)`` wraps the API):
    each event is noted on the API, whose ``encode_response`` answers with the events so far."""

    def on_before_decode_request(self, lit_api, **kwargs):
        lit_api.seen = ["before decode"]

    def on_after_decode_request(self, lit_api, **kwargs):
        lit_api.seen.append("after decode")

    def on_before_predict(self, lit_api, **kwargs):
        lit_api.seen.append("before predict")

    def on_after_predict(self, lit_api, **kwargs):
        lit_api.seen.append("after predict")

    def on_before_encode_response(self, lit_api, **kwargs):
        lit_api.seen.append("before encode")


class Called(litkit.LitAPI):
    def predict(self, x):
        return x

    def encode_response(self, output):
        return {"seen": list(self.seen)}


def called() -> litkit.LitAPI:
    """``Called`` with ``Recorder``'s events around its hooks."""
    return with_callbacks(Called(), [Recorder()])


class Unhealthy(Plain):
    """LitServe's ``health()`` hook (async here), saying no: ``GET /health`` answers 503."""

    async def health(self):
        return False


class Guarded(Plain):
    """LitServe's ``authorize()`` hook: only a caller with the token gets in."""

    def authorize(self, request):
        if request.headers.get("authorization") != "Bearer let-me-in":
            raise litkit.HTTPError(401, "send Authorization: Bearer <token>")


class Device(litkit.LitAPI):
    """LitServe's ``self.device``: set before ``setup(device)``, readable in every hook."""

    def setup(self, device):
        self.in_setup = (device, self.device)

    def predict(self, x):
        return {"setup": list(self.in_setup), "predict": self.device}


class LitServeChunks(litkit.LitAPI):
    """Under LitServe's conventions (``litkit.contract.conventions``): text chunks go out as they
    are (two of them make one JSON line here), a dict as a JSON line; a hook's exception reads
    ``Internal server error``."""

    def predict(self, x):
        if x.get("fail"):
            raise ValueError("internals the client must not read")
        yield '{"part": '
        yield "1}\n"
        yield {"part": 2}


def litserve_chunks() -> litkit.LitAPI:
    from litkit.contract.conventions import following_litserve

    return following_litserve(LitServeChunks())


class AsyncChat(litkit.LitAPI):
    """An async generator behind a chat spec: the spec's envelope around its chunks."""

    async def predict(self, request):
        for word in request["messages"][-1]["content"].split():
            yield word + " "
