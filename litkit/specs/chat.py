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
    ``{"content": str, "finish_reason": "length"}`` to end with another reason than ``"stop"``,
    and may carry the token counts, ``"usage": {"prompt_tokens": int, "completion_tokens": int}``
    (the last counts given are the answer's ``usage``; ``total_tokens`` is their sum).
    With ``"stream": true`` each delta goes out as one SSE ``chat.completion.chunk`` event and
    ``data: [DONE]`` ends the stream; a request with ``"stream_options": {"include_usage": true}``
    gets, before ``[DONE]``, OpenAI's last chunk with no choices and the usage. Otherwise the answer
    is one ``chat.completion`` object, with ``usage`` when the API reported counts.

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
        options = request.get("stream_options")
        if options is not None and not (isinstance(options, dict) and isinstance(options.get("include_usage", False), bool)):
            raise HTTPError(400, f'stream_options must be an object like {{"include_usage": true}}, got {options!r}')
        return request, stream

    def context(self, request: Any, request_id: str) -> Any:
        envelope = _Envelope(id="chatcmpl-" + request_id, created=int(time.time()), model=request.get("model") or self.model or "litkit")
        envelope.include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        return envelope

    def stream(self, chunks: Iterable[Any], context: Any) -> Iterator[Any]:
        deltas = _Deltas(context)
        for chunk in chunks:
            event = deltas.add(chunk)
            if event is not None:
                yield event
        yield from deltas.ending()

    async def astream(self, chunks: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        deltas = _Deltas(context)
        async for chunk in chunks:
            event = deltas.add(chunk)
            if event is not None:
                yield event
        for event in deltas.ending():
            yield event

    def complete(self, chunks: list[Any], context: Any) -> Any:
        parts, finish_reason, usage = [], "stop", None
        for chunk in chunks:
            content, reason, counts = _content(chunk)
            parts.append(content)
            finish_reason, usage = reason or finish_reason, counts or usage
        choice = {"index": 0, "message": {"role": "assistant", "content": "".join(parts)}, "finish_reason": finish_reason, "logprobs": None}
        answer = {**context, "object": "chat.completion", "choices": [choice]}
        if usage is not None:
            answer["usage"] = usage
        return answer

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


class _Envelope(dict):
    """The fields every chunk of one answer repeats (``id``, ``created``, ``model``), and whether
    the client asked for a usage chunk at the end of its stream: an attribute, so it is not sent."""

    include_usage = False


class _Deltas:
    """The events of one streamed answer, a chunk at a time (``stream`` and ``astream`` alike): the
    first delta names the role, the last carries the finish reason, then the usage chunk if asked."""

    def __init__(self, context: Any) -> None:
        self.context = context
        self.delta: dict[str, Any] = {"role": "assistant"}
        self.finish_reason = "stop"
        self.usage: dict[str, int] | None = None

    def add(self, chunk: Any) -> dict[str, Any] | None:
        content, reason, counts = _content(chunk)
        self.finish_reason, self.usage = reason or self.finish_reason, counts or self.usage
        if not content:
            return None
        event = OpenAIChat._chunk(self.context, {**self.delta, "content": content}, None)
        self.delta = {}
        return event

    def ending(self) -> list[dict[str, Any]]:
        events = [OpenAIChat._chunk(self.context, {**self.delta, "content": ""} if self.delta else {}, self.finish_reason)]
        if getattr(self.context, "include_usage", False):
            events.append({**self.context, "object": "chat.completion.chunk", "choices": [], "usage": self.usage})
        return events


def _content(chunk: Any) -> tuple[str, str | None, dict[str, int] | None]:
    """(text, finish reason, token counts) of one chunk the API gave."""
    if isinstance(chunk, str):
        return chunk, None, None
    if isinstance(chunk, dict) and isinstance(chunk.get("content", ""), str):
        return chunk.get("content", ""), chunk.get("finish_reason"), _usage(chunk.get("usage"))
    raise TypeError(
        f"an OpenAIChat endpoint sends text: yield str deltas from predict (or encode_response), "
        f"or dicts like {{'content': '...'}}; got {type(chunk).__name__}"
    )


def _usage(counts: Any) -> dict[str, int] | None:
    """OpenAI's usage object from a chunk's ``usage``: both counts, and their total."""
    if counts is None:
        return None
    if not (isinstance(counts, dict) and all(isinstance(counts.get(key), int) for key in ("prompt_tokens", "completion_tokens"))):
        raise TypeError(f'a chunk\'s usage is a dict like {{"prompt_tokens": 12, "completion_tokens": 30}} (ints), got {counts!r}')
    prompt, completion = counts["prompt_tokens"], counts["completion_tokens"]
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
