"""The base class of API specs (``Spec``): what a spec implements to speak a wire format of its own.

Stdlib only: worker processes import this module.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterable, Iterator

__all__ = ["Spec"]


class Spec:
    """Base class of specs. Subclasses set the paths and implement the four methods below."""

    name = "spec"
    path = "/"  # the endpoint's POST path (under the endpoint's prefix)
    extra_paths: dict[str, str] = {}  # GET paths the server answers from ``extra_response``
    always_sse = False  # stream as server-sent events whatever the Accept header says
    batchable = False  # may serve with max_batch_size > 1 (its answers never stream)
    model: str | None = None
    # The request body's JSON schema, for /openapi.json and the page at / (None: none declared).
    request_schema: dict[str, Any] | None = None

    def __init__(self, model: str | None = None) -> None:
        """``model``: the model name the spec's answers carry (None: the API class's name).

        Raises:
            ValueError: ``model`` is not a non-empty str or None.
        """
        if model is not None and (not isinstance(model, str) or not model):
            raise ValueError(f"model must be a non-empty str or None, got {model!r}")
        self.model = model

    def decode_request(self, request: Any) -> tuple[Any, bool]:
        """Validate the parsed body; return (what ``decode_request`` receives, whether to stream).

        Raises:
            litkit.HTTPError: the body does not follow the spec (400).
        """
        raise NotImplementedError

    def default_input(self, request: Any) -> Any:
        """What ``predict`` receives from an API that keeps LitAPI's own ``decode_request``: the
        validated request, or a part of it (LitServe's convention)."""
        return request

    def populate_context(self, context: dict[str, Any], request: Any) -> None:
        """Fill the dict that hooks declaring a ``context`` parameter receive (LitServe's); default: nothing."""

    def check_batched(self, request: Any) -> None:
        """Raise ``litkit.HTTPError`` if this request cannot join a batch (batchable specs only)."""

    def context(self, request: Any, request_id: str) -> Any:
        """Per-request values the envelopes share (ids, timestamps)."""
        return None

    def stream(self, chunks: Iterable[Any], context: Any) -> Iterator[Any]:
        """The chunks to send, built around the API's chunks."""
        raise NotImplementedError

    async def astream(self, chunks: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        """``stream`` for an async API's chunks (an async iterator)."""
        raise NotImplementedError(f"{type(self).__name__} streams from sync hooks only; make predict a plain generator")
        yield  # an async generator  # pragma: no cover

    def complete(self, chunks: list[Any], context: Any) -> Any:
        """The whole answer of a request that does not stream, built from all the API's chunks."""
        raise NotImplementedError

    def extra_response(self, name: str, model: str, created: int) -> Any:
        """The JSON answer of the GET path ``extra_paths[name]`` (server side)."""
        raise NotImplementedError

    def example_request(self, model: str) -> Any:
        """A body that the banner's ``curl`` line can send."""
        return {}

    def error_body(self, status: int, message: str, request_id: str) -> Any:
        """The JSON of an error answer (server side)."""
        return {"error": message, "request_id": request_id}
