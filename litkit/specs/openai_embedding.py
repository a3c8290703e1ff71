"""OpenAI embeddings (``OpenAIEmbeddingSpec``, LitServe's name): ``POST /v1/embeddings``.

``ls.LitAPI(spec=ls.OpenAIEmbeddingSpec())`` makes the official client's
``client.embeddings.create(model=..., input=...)`` work. LitAPI's own ``decode_request`` hands
``predict`` the request's ``input`` (a str, or a list of them); an API that overrides
``decode_request`` receives the whole request (``request.input``, ``request.model``, ...), as in
LitServe. ``predict`` returns the embeddings: a list of floats, a list of them, or a numpy array or
torch tensor (1-d for one input); ``encode_response`` may instead return ``{"embeddings": ...,
"prompt_tokens": N, "total_tokens": N}`` to report usage. ``encoding_format="base64"`` (the
client's default) is answered as little-endian float32, as OpenAI does.

With ``max_batch_size`` above 1, requests are batched: ``predict`` receives a list of inputs, one
per request, so each request must carry one input (a list of several is a 400, as in LitServe).

Stdlib only: worker processes import this module.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Iterable, Iterator

from ..errors import HTTPError
from .records import EmbeddingRequest
from .spec import Spec

__all__ = ["OpenAIEmbeddingSpec"]


class OpenAIEmbeddingSpec(Spec):
    """OpenAI embeddings: ``POST /v1/embeddings`` (see the module docstring).

    Args:
        model: the model name answers carry when a request names none; default: the API class name.
    """

    name = "openai-embedding"
    path = "/v1/embeddings"
    batchable = True
    request_schema = {
        "title": "EmbeddingRequest",
        "type": "object",
        "required": ["input"],
        "properties": {
            "input": {"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": {"type": ["string", "integer", "array"]}}]},
            "model": {"type": "string"},
            "encoding_format": {"enum": ["float", "base64"], "default": "float"},
        },
    }

    def decode_request(self, request: Any) -> tuple[Any, bool]:
        if not isinstance(request, dict):
            raise HTTPError(400, f"an embeddings request is a JSON object, got {type(request).__name__}")
        text = request.get("input")
        if not (isinstance(text, str) or (isinstance(text, list) and text and all(isinstance(item, (str, int, list)) for item in text))):
            raise HTTPError(400, 'input must be a string or a non-empty list of strings, e.g. {"input": "hello", "model": "m"}')
        encoding = request.get("encoding_format", "float")
        if encoding not in ("float", "base64"):
            raise HTTPError(400, f"encoding_format must be 'float' or 'base64', got {encoding!r}")
        if request.get("dimensions") is not None:
            raise HTTPError(400, "dimensions is not supported by this server; leave it out to get the model's own size")
        return EmbeddingRequest(request), False

    def default_input(self, request: Any) -> Any:
        return request.input

    def check_batched(self, request: Any) -> None:
        if request.get_num_items() > 1:
            raise HTTPError(
                400,
                "this endpoint batches requests on the server (max_batch_size > 1), so each request must carry one input; "
                "send the inputs in separate requests, or serve with max_batch_size=1",
            )

    def context(self, request: Any, request_id: str) -> Any:
        return {"model": request.model or self.model or "litkit", "encoding_format": request.encoding_format, "items": request.get_num_items()}

    def stream(self, chunks: Iterable[Any], context: Any) -> Iterator[Any]:
        raise HTTPError(400, "embeddings do not stream; send the request without stream")

    def complete(self, chunks: list[Any], context: Any) -> Any:
        [output] = chunks if len(chunks) == 1 else [chunks]
        usage = {"prompt_tokens": 0, "total_tokens": 0}
        if isinstance(output, dict):
            if "embeddings" not in output:
                raise TypeError(
                    "encode_response of an OpenAIEmbeddingSpec endpoint returned a dict without 'embeddings'; "
                    "return {'embeddings': ..., 'prompt_tokens': N}, or the embeddings alone"
                )
            usage = {key: int(output.get(key, 0) or 0) for key in usage}
            output = output["embeddings"]
        vectors = _vectors(output)
        if len(vectors) != context["items"]:
            raise HTTPError(500, f"the request has {context['items']} inputs but predict returned {len(vectors)} embeddings; return one per input")
        data = [{"object": "embedding", "index": index, "embedding": _encoded(vector, context["encoding_format"])} for index, vector in enumerate(vectors)]
        return {"object": "list", "data": data, "model": context["model"], "usage": usage}

    def extra_response(self, name: str, model: str, created: int) -> Any:
        raise NotImplementedError  # no extra GET paths

    def example_request(self, model: str) -> Any:
        return {"model": model, "input": "hello"}

    def error_body(self, status: int, message: str, request_id: str) -> Any:
        kind = "invalid_request_error" if status < 500 else "server_error"
        return {"error": {"message": message, "type": kind, "code": status}, "request_id": request_id}


def _vectors(output: Any) -> list[list[float]]:
    """Embeddings as a list of vectors: numpy arrays and torch tensors by ``tolist()`` (never imported)."""
    ndim = getattr(output, "ndim", None)
    if hasattr(output, "tolist"):
        output = output.tolist()
    if ndim == 1 or (isinstance(output, (list, tuple)) and output and isinstance(output[0], (int, float))):
        output = [output]
    if not isinstance(output, (list, tuple)) or not all(isinstance(vector, (list, tuple)) for vector in output):
        raise TypeError(f"predict of an OpenAIEmbeddingSpec endpoint must return a list of floats, a list of them, or an array; got {type(output).__name__}")
    return [[float(value) for value in (vector.tolist() if hasattr(vector, "tolist") else vector)] for vector in output]


def _encoded(vector: list[float], encoding: str) -> Any:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector
