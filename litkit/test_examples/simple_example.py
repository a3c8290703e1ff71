"""LitServe's simple example APIs, for ``import litkit as ls``: the squaring model of LitServe's
README, batched and streaming variants, and a torch one."""

from __future__ import annotations

from typing import Any, Iterator

from ..api import LitAPI

__all__ = ["SimpleLitAPI", "SimpleBatchedAPI", "SimpleTorchAPI", "SimpleStreamAPI"]


def _square(x: Any) -> Any:
    return x**2


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python number it holds (JSON takes those)."""
    return value.item() if hasattr(value, "item") and getattr(value, "shape", None) == () else value


class SimpleLitAPI(LitAPI):
    """``{"input": 4.0}`` answers ``{"output": 16.0}``."""

    def setup(self, device: str) -> None:
        self.model = _square

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Any:
        return self.model(x)

    def encode_response(self, output: Any) -> Any:
        return {"output": output}


class SimpleBatchedAPI(LitAPI):
    """``SimpleLitAPI`` over numpy arrays, for ``max_batch_size`` above 1 (the default ``batch``
    stacks the arrays)."""

    def setup(self, device: str) -> None:
        self.model = _square

    def decode_request(self, request: Any) -> Any:
        import numpy

        return numpy.asarray(request["input"])

    def predict(self, x: Any) -> Any:
        return self.model(x)

    def encode_response(self, output: Any) -> Any:
        return {"output": _plain(output)}


class SimpleTorchAPI(LitAPI):
    """A torch ``Linear(1, 1)`` layer with weight 2 and bias 1 on ``self.device``:
    ``{"input": 4.0}`` answers ``{"output": 9.0}``."""

    def setup(self, device: str) -> None:
        import torch

        layer = torch.nn.Linear(1, 1)
        with torch.no_grad():
            layer.weight.fill_(2.0)
            layer.bias.fill_(1.0)
        self.model = layer.to(device)

    def decode_request(self, request: Any) -> Any:
        import torch

        return torch.tensor([request["input"]], device=self.device)

    def predict(self, x: Any) -> Any:
        return self.model(x[None, :])  # one row: the layer takes a batch

    def encode_response(self, output: Any) -> Any:
        return {"output": float(output)}


class SimpleStreamAPI(LitAPI):
    """Streams three text chunks, ``"0: <input>"``, ``"1: <input>"``, ``"2: <input>"``, each in a
    ``{"output": ...}`` JSON line (serve it with ``stream=True``)."""

    def setup(self, device: str) -> None:
        self.model = lambda index, text: f"{index}: {text}"

    def decode_request(self, request: Any) -> Any:
        return request["input"]

    def predict(self, x: Any) -> Iterator[str]:
        for index in range(3):
            yield self.model(index, x)

    def encode_response(self, output_stream: Iterator[str]) -> Iterator[Any]:
        for output in output_stream:
            yield {"output": output}
