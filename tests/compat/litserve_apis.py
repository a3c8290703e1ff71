"""LitServe-style APIs, written as LitServe's README and docs write them, but for ``import litkit as ls``.

The tests register this module with cloudpickle by value, the way a script's classes travel.
"""

from __future__ import annotations

import asyncio
import os
import time

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

import litkit as ls
from litkit.schema.image import ImageInput, ImageOutput


class SimpleLitAPI(ls.LitAPI):
    """LitServe's README example: y = x**2."""

    def setup(self, device):
        self.model = lambda x: x**2

    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        return self.model(x)

    def encode_response(self, output):
        return {"output": output}


class Cube(SimpleLitAPI):
    def setup(self, device):
        self.model = lambda x: x**3


class BatchSizes(ls.LitAPI):
    """Answers with the size of the batch its request was in."""

    def decode_request(self, request):
        return request["input"]

    def predict(self, batch):
        time.sleep(0.05)
        return [len(batch)] * len(batch)

    def encode_response(self, output):
        return {"batch_size": output}


class StreamingAPI(ls.LitAPI):
    def decode_request(self, request):
        return request["n"]

    def predict(self, n):
        for i in range(n):
            yield i

    def encode_response(self, output):
        for i in output:
            yield {"output": i}


class Slow(ls.LitAPI):
    def decode_request(self, request):
        return request["seconds"]

    def predict(self, seconds):
        time.sleep(seconds)
        return seconds

    def encode_response(self, output):
        return {"slept": output}


class RequestAuth(SimpleLitAPI):
    """authorize(self, request): the token is read from the request's headers."""

    def authorize(self, request):
        if request.headers.get("Authorization") != "Bearer 1234":
            raise HTTPException(status_code=401, detail="Bad token")


class BearerAuth(SimpleLitAPI):
    """LitServe's documented form: FastAPI's HTTPBearer dependency."""

    def authorize(self, auth: HTTPAuthorizationCredentials = Depends(HTTPBearer())):
        if auth.scheme != "Bearer" or auth.credentials != "1234":
            raise HTTPException(status_code=401, detail="Bad token")


class RefusesOdd(SimpleLitAPI):
    """decode_request raises fastapi's HTTPException, as LitServe users do to refuse a request."""

    def decode_request(self, request):
        if request["input"] % 2:
            raise HTTPException(status_code=422, detail="input must be even")
        return request["input"]


class OpenAILitAPI(ls.LitAPI):
    """LitServe's OpenAISpec example: the request arrives as an object with attribute access."""

    def setup(self, device):
        self.model = lambda messages: f"you said: {messages[-1].content}"

    def predict(self, request):
        reply = self.model(request.messages)
        for word in reply.split(" "):
            yield word + " "

    def encode_response(self, output):
        for chunk in output:
            yield {"role": "assistant", "content": chunk}


class UsageAPI(ls.LitAPI):
    """Token usage and the request's options, as LitServe's docs show them."""

    def predict(self, request):
        yield {"role": "assistant", "content": f"max_tokens={request.max_tokens} temperature={request.temperature}", "prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


class ToolCallAPI(ls.LitAPI):
    def predict(self, request):
        assert request.tools[0].function.name == "get_weather"
        yield {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
        }


class Embedder(ls.LitAPI):
    """A stand-in embedding model: the vector is made from the text's length and first letter."""

    def setup(self, device):
        self.model = lambda texts: [[float(len(text)), float(ord(text[0])), 1.0] for text in texts]

    def predict(self, inputs):
        return self.model(inputs if isinstance(inputs, list) else [inputs])


class BatchedEmbedder(Embedder):
    def predict(self, inputs):
        import numpy

        time.sleep(0.05)
        return numpy.array(self.model(inputs))  # one row per request of the batch

    def encode_response(self, output):
        return {"embeddings": output, "prompt_tokens": 2, "total_tokens": 2}


class Logs(SimpleLitAPI):
    """self.log from the hooks, as LitServe's docs show for loggers."""

    def predict(self, x):
        self.log("input", x)
        return self.model(x)


class HealthFile(SimpleLitAPI):
    """health() says what a file says: 'ok' is healthy."""

    def __init__(self, path, **options):
        super().__init__(**options)
        self.path = path

    def health(self):
        with open(self.path) as status:
            return status.read() == "ok"


class AsyncHealth(SimpleLitAPI):
    async def health(self):
        return False


class WithContext(ls.LitAPI):
    """LitServe's context argument: one dict per request, shared by its hooks."""

    def decode_request(self, request, context):
        context["seen_by"] = ["decode_request"]
        return request["input"]

    def predict(self, x, context):
        context["seen_by"].append("predict")
        return x + 1

    def encode_response(self, output, context):
        return {"output": output, "seen_by": context["seen_by"] + ["encode_response"]}


class BatchedContext(ls.LitAPI):
    def decode_request(self, request, context):
        context["input"] = request["input"]
        return request["input"]

    def predict(self, inputs, context):
        time.sleep(0.05)
        assert [c["input"] for c in context] == inputs  # the batch's dicts, in order
        return [len(inputs)] * len(inputs)

    def encode_response(self, output, context):
        return {"input": context["input"], "batch_size": output}


class ChatContext(ls.LitAPI):
    def predict(self, request, context):
        yield f"temperature={context['temperature']} max_tokens={context['max_tokens']} has_messages={'messages' in context}"


class FileAPI(ls.LitAPI):
    """LitServe's multipart example: the form's file arrives as an UploadFile."""

    def decode_request(self, request):
        upload = request["content"]
        return {"name": request["name"], "filename": upload.filename, "type": upload.content_type, "data": upload.file.read()}

    def predict(self, x):
        return {**x, "data": x["data"].decode(), "size": len(x["data"])}


class FormFields(ls.LitAPI):
    def decode_request(self, request):
        return {key: request[key] for key in sorted(request)}

    def predict(self, x):
        return x


class TorchBatch(ls.LitAPI):
    """LitServe's default batch stacks torch tensors; so does litkit's."""

    def decode_request(self, request):
        import torch

        return torch.tensor(request["vector"])

    def predict(self, batch):
        time.sleep(0.05)
        return [{"type": type(batch).__name__, "batch_shape": list(batch.shape), "row_sum": float(row.sum())} for row in batch]


class EndlessStream(ls.LitAPI):
    """A LitServe streaming API whose generator would run forever; its finally marks a file."""

    def __init__(self, marker, **options):
        super().__init__(**options)
        self.marker = marker

    def decode_request(self, request):
        return request

    def predict(self, x):
        try:
            while True:
                time.sleep(0.01)
                yield "token"
        finally:
            with open(self.marker, "w") as mark:
                mark.write("stopped")

    def encode_response(self, output):
        for token in output:
            yield {"output": token}


class Rendezvous(ls.LitAPI):
    """``enable_async=True``: each request waits until ``together`` requests run at once in this
    worker, so they all answer only if the worker runs them concurrently (else the first gives up)."""

    together = 8

    def __init__(self):
        super().__init__(enable_async=True)

    def setup(self, device):
        self.arrived = 0
        self.all_in = asyncio.Event()

    async def decode_request(self, request):
        return request["input"]

    async def predict(self, x):
        self.arrived += 1
        if self.arrived >= self.together:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), 20)
        return x

    async def encode_response(self, output):
        return {"output": output}


class BatchSizesByAttribute(BatchSizes):
    """LitServe's attributes set in an ``__init__`` that does not call ``super().__init__()``."""

    def __init__(self):
        self.max_batch_size = 4
        self.batch_timeout = 0.5


class BatchedStream(ls.LitAPI):
    """LitServe's batched stream: ``encode_response`` gets the stream of unbatched lists and yields
    one list per step, an item per request."""

    def decode_request(self, request):
        return request["input"]

    def predict(self, inputs):
        for step in range(3):
            yield [f"{x}-{step}" for x in inputs]

    def encode_response(self, output_stream):
        for outputs in output_stream:
            yield [{"output": output} for output in outputs]


class TextStream(ls.LitAPI):
    """Streams str chunks, which LitServe sends as they are."""

    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        for i in range(3):
            yield f"{i}: {x}"

    def encode_response(self, output_stream):
        yield from output_stream


class Failing(SimpleLitAPI):
    def predict(self, x):
        raise ValueError("secret internals")


class ShowsDevice(SimpleLitAPI):
    def predict(self, x):
        return self.device


class SlowStart(SimpleLitAPI):
    """``setup`` waits (up to a minute) until the file ``flag`` exists: requests arrive meanwhile."""

    def __init__(self, flag):
        super().__init__()
        self.flag = flag

    def setup(self, device):
        deadline = time.monotonic() + 60
        while not os.path.exists(self.flag) and time.monotonic() < deadline:
            time.sleep(0.01)
        super().setup(device)


class Counts(ls.Callback):
    def __init__(self):
        self.seen = []

    def on_request(self, *args, **kwargs):
        self.seen.append("request")

    def on_response(self, *args, **kwargs):
        self.seen.append("response")


class LargeAnswer(ls.LitAPI):
    """Answers with ``size`` characters of easily compressed text."""

    def decode_request(self, request):
        return request["size"]

    def predict(self, size):
        return "0" * size

    def encode_response(self, output):
        return {"result": output}


class FailsToStart(SimpleLitAPI):
    def setup(self, device):
        raise RuntimeError("no model here")


class Mirror(ls.LitAPI):
    """LitServe's image schemas: an image in, the same image mirrored out."""

    def decode_request(self, request: ImageInput):
        return request.get_image()

    def predict(self, image):
        from PIL import ImageOps

        return ImageOps.mirror(image)

    def encode_response(self, image):
        return ImageOutput(image=image)


class AsyncChat(ls.LitAPI):
    """LitServe's async OpenAI API: enable_async=True and an async generator."""

    def __init__(self):
        super().__init__(spec=ls.OpenAISpec(), enable_async=True)

    async def decode_request(self, request):
        return request.messages[-1].content

    async def predict(self, prompt):
        for word in prompt.split():
            await asyncio.sleep(0)
            yield word + " "

    async def encode_response(self, output):
        async for chunk in output:
            yield {"role": "assistant", "content": chunk}
