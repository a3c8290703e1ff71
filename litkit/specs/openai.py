"""LitServe's ``OpenAISpec``: OpenAI chat completions as LitServe's hooks see them.

``ls.LitAPI(spec=ls.OpenAISpec())`` (or ``LitServer(api, spec=...)``) serves ``POST /v1/chat/completions``
and ``GET /v1/models``, as ``litkit.specs.OpenAIChat`` does, with LitServe's conventions on top:

* ``decode_request`` receives a ``ChatCompletionRequest`` with attribute access
  (``request.messages[-1].content``, ``request.max_tokens``, ``request.tools``), which the default
  ``decode_request`` hands to ``predict``;
* ``predict`` (or ``encode_response``) yields text, or messages as dicts:
  ``{"role": "assistant", "content": "...", "tool_calls": [...]}``, which may carry token counts
  (``prompt_tokens``, ``completion_tokens``, ``total_tokens``) for the answer's ``usage``;
* without ``"stream": true`` the chunks are joined into one ``chat.completion`` whose usage is the sum
  of the chunks' counts; a stream ends with a chunk that has ``finish_reason: "stop"`` and the usage
  of the last chunk, as LitServe 0.2.19 answers.

This module is at LitServe's import path: ``from litkit.specs.openai import OpenAISpec, ChatMessage,
ChatCompletionRequest`` (as ``litserve.specs.openai``). Stdlib only: worker processes import it.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterable, Iterator

from .chat import OpenAIChat
from .records import ChatCompletionRequest, ChatMessage, check_chat_request

__all__ = ["OpenAISpec", "OpenAIChat", "ChatMessage", "ChatCompletionRequest"]

_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


class OpenAISpec(OpenAIChat):
    """LitServe's OpenAI chat spec (see the module docstring).

    Args:
        model: the model name ``/v1/models`` lists; default: the API class name.
    """

    def decode_request(self, request: Any) -> tuple[Any, bool]:
        if isinstance(request, dict):
            check_chat_request(request)  # 422 for a field of the wrong type, as LitServe's pydantic model
        body, stream = super().decode_request(request)
        return ChatCompletionRequest(body), stream

    def populate_context(self, context: dict[str, Any], request: Any) -> None:
        """As LitServe: the request's options (``temperature``, ``max_tokens``, ...), without the messages."""
        context.update({key: value for key, value in request.model_dump().items() if key != "messages"})

    def stream(self, chunks: Iterable[Any], context: Any) -> Iterator[Any]:
        usage = None
        for chunk in chunks:
            message, usage = _message(chunk)
            delta = {"role": message.get("role", "assistant"), "content": message.get("content"), "tool_calls": message.get("tool_calls")}
            yield self._litserve_chunk(context, delta, None, None)
        yield self._litserve_chunk(context, {}, "stop", usage)

    async def astream(self, chunks: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        usage = None
        async for chunk in chunks:
            message, usage = _message(chunk)
            delta = {"role": message.get("role", "assistant"), "content": message.get("content"), "tool_calls": message.get("tool_calls")}
            yield self._litserve_chunk(context, delta, None, None)
        yield self._litserve_chunk(context, {}, "stop", usage)

    def complete(self, chunks: list[Any], context: Any) -> Any:
        parts: list[str] = []
        tool_calls = None
        total = dict.fromkeys(_USAGE_KEYS, 0)
        for chunk in chunks:
            message, usage = _message(chunk)
            if message.get("content") is not None:
                parts.append(message["content"])
            tool_calls = message.get("tool_calls") or tool_calls
            for key in _USAGE_KEYS:
                total[key] += usage[key]
        message = {"role": "assistant", "content": "".join(parts), "tool_calls": tool_calls}
        choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
        return {**context, "object": "chat.completion", "choices": [choice], "usage": total}

    @staticmethod
    def _litserve_chunk(context: Any, delta: dict[str, Any], finish_reason: str | None, usage: dict[str, int] | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        return {**context, "object": "chat.completion.chunk", "system_fingerprint": None, "choices": [choice], "usage": usage}


def _message(output: Any) -> tuple[dict[str, Any], dict[str, int]]:
    """(the message, its token counts) of one thing ``predict`` or ``encode_response`` gave, read as LitServe does."""
    if hasattr(output, "model_dump") and callable(output.model_dump):  # a pydantic ChatMessage, or a Record
        output = output.model_dump()
    if output is None:
        message: dict[str, Any] = {"role": "assistant", "content": None}
    elif isinstance(output, str):
        message = {"role": "assistant", "content": output}
    elif isinstance(output, dict) and "content" in output:
        message = {"role": "assistant", **output} if "role" not in output else dict(output)
    elif isinstance(output, list) and output and isinstance(output[-1], dict) and "role" in output[-1] and "content" in output[-1]:
        message = dict(output[-1])
    else:
        raise TypeError(
            f"an OpenAISpec endpoint takes text or messages from predict (or encode_response): yield a str, or a dict "
            f"like {{'role': 'assistant', 'content': '...'}}; got {output!r}"
        )
    usage = {key: int(message.pop(key, 0) or 0) for key in _USAGE_KEYS}
    return message, usage
