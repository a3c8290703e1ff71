"""LitServe's example APIs for ``ls.OpenAISpec``, for ``import litkit as ls``: each answers any
chat request with fixed text (or a tool call, or usage counts)."""

from __future__ import annotations

import time
from typing import Any, Iterator

from ..api import LitAPI
from ..specs.records import ChatMessage

__all__ = [
    "TestAPI",
    "TestAPIWithCustomEncode",
    "TestAPIWithToolCalls",
    "TestAPIWithStructuredOutput",
    "OpenAIBatchContext",
    "OpenAIWithUsage",
    "OpenAIWithUsageEncodeResponse",
    "OpenAIBatchingWithUsage",
]

_USAGE = {"prompt_tokens": 25, "completion_tokens": 10, "total_tokens": 35}
_GREETING = "Hi! It's nice to meet you. Is there something I can help you with or would you like to chat?"


class TestAPI(LitAPI):
    """Answers ``This is a generated output``."""

    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> Iterator[str]:
        yield "This is a generated output"


class TestAPIWithCustomEncode(TestAPI):
    """``encode_response`` yields a ``ChatMessage``: ``This is a custom encoded output``."""

    def encode_response(self, output: Any) -> Iterator[Any]:
        yield ChatMessage(role="assistant", content="This is a custom encoded output")


class TestAPIWithToolCalls(TestAPI):
    """Answers with a call of ``function_1`` (``{"arg_1": "arg_1_value"}``) and empty content."""

    def encode_response(self, output: Any) -> Iterator[Any]:
        call = {"id": "call_1", "type": "function", "function": {"name": "function_1", "arguments": '{"arg_1": "arg_1_value"}'}}
        yield ChatMessage(role="assistant", content="", tool_calls=[call])


class TestAPIWithStructuredOutput(TestAPI):
    """Answers with a JSON object as its content."""

    def encode_response(self, output: Any) -> Iterator[Any]:
        yield ChatMessage(role="assistant", content='{"name": "Science Fair", "date": "Friday", "participants": ["Alice", "Bob"]}')


class OpenAIBatchContext(LitAPI):
    """For batching: streams a greeting word by word to every request of the batch, and checks that
    each request's ``context`` it set in ``predict`` reaches ``encode_response``."""

    def setup(self, device: str) -> None:
        self.model = None

    def batch(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def predict(self, inputs: list[Any], context: list[dict[str, Any]]) -> Iterator[list[str]]:
        for request_context in context:
            request_context["temperature"] = 1.0
        for word in _GREETING.split():
            time.sleep(0.01)  # as a model would take its time
            yield [word + " "] * len(inputs)

    def unbatch(self, output: Any) -> Any:
        return output

    def encode_response(self, output_stream: Iterator[list[str]], context: list[dict[str, Any]]) -> Iterator[list[dict[str, str]]]:
        for outputs in output_stream:
            yield [{"role": "assistant", "content": output} for output in outputs]
        for request_context in context:
            if request_context["temperature"] != 1.0:
                raise AssertionError(f"context {request_context} lost the temperature predict set")


class OpenAIWithUsage(LitAPI):
    """Answers ``10 + 6 is equal to 16.`` with token counts (``usage``)."""

    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> Iterator[dict[str, Any]]:
        yield {"role": "assistant", "content": "10 + 6 is equal to 16.", **_USAGE}


class OpenAIWithUsageEncodeResponse(LitAPI):
    """The same answer token by token, the counts in a last, empty message."""

    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> Iterator[str]:
        yield from ["10", " +", " ", "6", " is", " equal", " to", " ", "16", "."]

    def encode_response(self, output: Iterator[str]) -> Iterator[dict[str, Any]]:
        for token in output:
            yield {"role": "assistant", "content": token}
        yield {"role": "assistant", "content": "", **_USAGE}


class OpenAIBatchingWithUsage(OpenAIWithUsage):
    """``OpenAIWithUsage`` for batching: one message per request, then the counts."""

    def batch(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def predict(self, x: list[Any]) -> Iterator[list[str]]:
        yield ["10 + 6 is equal to 16."] * len(x)

    def unbatch(self, output: Any) -> Any:
        return output

    def encode_response(self, output_stream_batch: Iterator[list[str]], context: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        for outputs in output_stream_batch:
            yield [{"role": "assistant", "content": output} for output in outputs]
        yield [{"role": "assistant", "content": "", **_USAGE} for _ in context]
