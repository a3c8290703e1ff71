"""LitServe's example APIs for ``ls.OpenAIEmbeddingSpec``, for ``import litkit as ls``: random
768-dimensional embeddings (numpy), one per input."""

from __future__ import annotations

from typing import Any, Iterator

from ..api import LitAPI

__all__ = [
    "TestEmbedAPI",
    "TestEmbedBatchedAPI",
    "TestEmbedAPIWithUsage",
    "TestEmbedAPIWithYieldPredict",
    "TestEmbedAPIWithYieldEncodeResponse",
    "TestEmbedAPIWithNonDictOutput",
    "TestEmbedAPIWithMissingEmbeddings",
]

DIMENSIONS = 768


def _random_rows(count: int) -> list[list[float]]:
    import numpy

    return numpy.random.rand(count, DIMENSIONS).tolist()


class TestEmbedAPI(LitAPI):
    """One random embedding per input (a str, or a list of them)."""

    def setup(self, device: str) -> None:
        self.model = None

    def predict(self, x: Any) -> list[list[float]]:
        return _random_rows(len(x) if isinstance(x, list) else 1)

    def encode_response(self, output: Any) -> dict[str, Any]:
        return {"embeddings": output}


class TestEmbedBatchedAPI(TestEmbedAPI):
    """For batching: ``predict`` gets one input per request."""

    def predict(self, batch: list[Any]) -> list[list[list[float]]]:
        return [_random_rows(len(x)) for x in batch]


class TestEmbedAPIWithUsage(TestEmbedAPI):
    """Adds token counts (``usage``)."""

    def encode_response(self, output: Any) -> dict[str, Any]:
        return {"embeddings": output, "prompt_tokens": 10, "total_tokens": 10}


class TestEmbedAPIWithYieldPredict(TestEmbedAPI):
    """A generator ``predict``: the spec refuses it (embeddings answer at once)."""

    def predict(self, x: Any) -> Iterator[float]:
        yield from _random_rows(1)[0]


class TestEmbedAPIWithYieldEncodeResponse(TestEmbedAPI):
    """A generator ``encode_response``: refused, as LitServe refuses it."""

    def encode_response(self, output: Any) -> Iterator[dict[str, Any]]:
        yield {"embeddings": output}


class TestEmbedAPIWithNonDictOutput(TestEmbedAPI):
    """``encode_response`` returns the bare list, which the spec refuses."""

    def encode_response(self, output: Any) -> Any:
        return output


class TestEmbedAPIWithMissingEmbeddings(TestEmbedAPI):
    """``encode_response`` without ``"embeddings"``, which the spec refuses."""

    def encode_response(self, output: Any) -> dict[str, Any]:
        return {"output": output}
