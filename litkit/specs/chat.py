"""litkit's OpenAI chat spec (``OpenAIChat``); LitServe's ``OpenAISpec`` builds on it (``litkit.specs.openai``).

``litkit.serve(api, spec=litkit.specs.OpenAIChat())`` serves ``POST /v1/chat/completions`` and
``GET /v1/models``, so the official ``openai`` client works against it unchanged.

A spec runs in the worker, around the user's hooks: it validates the request body, then builds the
protocol's envelope around each chunk the API yields (or around the whole answer). The server only
relays the bytes, so the hot path and cancellation are the same as for any streaming endpoint.

Stdlib only: worker processes import this module.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Iterable, Iterator

from ..errors import HTTPError
from .spec import Spec

__all__ = ["OpenAIChat"]


class OpenAIChat(Spec):
    """OpenAI chat completions: ``POST /v1/chat/completions`` and ``GET /v1/models``.

    The API's ``decode_request`` receives the request body (a dict with ``messages``, ``model``,
    ``max_tokens``, ...; default: passed to ``predict`` as is). ``predict`` yields the reply as text
    deltas (``str``), or returns the whole reply as a ``str``. A chunk may also be a dict
    ``{"content": str, "finish_reason": "length"}`` to end with another reason than ``"stop"``.
    With ``"stream": true`` each delta goes out as one SSE ``chat.completion.chunk`` event and
    ``data: [DONE]`` ends the stream; otherwise the answer is one ``chat.completion`` object.

    Args:
        model: the model name ``/v1/models`` lists; default: the API class name. Requests may name
            any model; the answer repeats the name the request gave.
    """

    name = "openai-chat"
    path = "/v1/chat/completions"
    extra_paths = {"models": "/v1/models"}
    always_sse = True
    request_schema = {
        "title": "ChatCompletionRequest",
        "type": "object",
        "required": ["messages"],
        "properties": {
            "model": {"type": "string"},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role"],
                    "properties": {"role": {"type": "string", "examples": ["user"]}, "content": {"type": ["string", "array", "null"]}},
                },
            },
            "stream": {"type": "boolean", "default": False},
            "max_tokens": {"type": ["integer", "null"]},
            "temperature": {"type": ["number", "null"]},
            "n": {"type": "integer", "const": 1},
        },
    }

    def decode_request(self, request: Any) -> tuple[Any, bool]:
        if not isinstance(request, dict):
            raise HTTPError(400, f"a chat completion request is a JSON object, got {type(request).__name__}")
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise HTTPError(400, 'messages must be a non-empty list of objects with a "role", e.g. [{"role": "user", "content": "hi"}]')
        stream = request.get("stream", False)
        if not isinstance(stream, bool):
            raise HTTPError(400, f"stream must be true or false, got {stream!r}")
        if request.get("n", 1) != 1:
            raise HTTPError(400, f"only n=1 is supported, got n={request.get('n')!r}")
        return request, stream

    def context(self, request: Any, request_id: str) -> Any:
        return {"id": "chatcmpl-" + request_id, "created": int(time.time()), "model": request.get("model") or self.model or "litkit"}

    def stream(self, chunks: Iterable[Any], context: Any) -> Iterator[Any]:
        delta: dict[str, Any] = {"role": "assistant"}  # the first delta names the role
        finish_reason = "stop"
        for chunk in chunks:
            content, reason = _content(chunk)
            finish_reason = reason or finish_reason
            if content:
                yield self._chunk(context, {**delta, "content": content}, None)
                delta = {}
        yield self._chunk(context, {**delta, "content": ""} if delta else {}, finish_reason)

    async def astream(self, chunks: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        delta: dict[str, Any] = {"role": "assistant"}
        finish_reason = "stop"
        async for chunk in chunks:
            content, reason = _content(chunk)
            finish_reason = reason or finish_reason
            if content:
                yield self._chunk(context, {**delta, "content": content}, None)
                delta = {}
        yield self._chunk(context, {**delta, "content": ""} if delta else {}, finish_reason)

    def complete(self, chunks: list[Any], context: Any) -> Any:
        parts, finish_reason = [], "stop"
        for chunk in chunks:
            content, reason = _content(chunk)
            parts.append(content)
            finish_reason = reason or finish_reason
        choice = {"index": 0, "message": {"role": "assistant", "content": "".join(parts)}, "finish_reason": finish_reason, "logprobs": None}
        return {**context, "object": "chat.completion", "choices": [choice]}

    def extra_response(self, name: str, model: str, created: int) -> Any:
        return {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "litkit"}]}

    def example_request(self, model: str) -> Any:
        return {"model": model, "messages": [{"role": "user", "content": "Say hello"}], "stream": True}

    def error_body(self, status: int, message: str, request_id: str) -> Any:
        # OpenAI's shape, so its clients show the message (their APIError.message).
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "code": status}, "request_id": request_id}

    @staticmethod
    def _chunk(context: Any, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return {**context, "object": "chat.completion.chunk", "choices": [choice]}


def _content(chunk: Any) -> tuple[str, str | None]:
    if isinstance(chunk, str):
        return chunk, None
    if isinstance(chunk, dict) and isinstance(chunk.get("content", ""), str):
        return chunk.get("content", ""), chunk.get("finish_reason")
    raise TypeError(
        f"an OpenAIChat endpoint sends text: yield str deltas from predict (or encode_response), "
        f"or dicts like {{'content': '...'}}; got {type(chunk).__name__}"
    )

