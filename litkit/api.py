"""The user-facing API class: four hooks a worker calls for every request."""

from __future__ import annotations

import inspect
import sys
from typing import Any

__all__ = ["LitAPI", "is_streaming_api", "is_async_api"]


class LitAPI:
    """Subclass this and override the hooks; litkit calls them inside each worker process.

    ``setup(device)`` runs once per worker before it takes requests. For each request the worker
    calls ``decode_request`` on the parsed JSON body, ``predict`` on what it returns, and
    ``encode_response`` on the prediction. When ``predict`` is a generator function the endpoint
    streams: ``encode_response`` then receives the generator and returns an iterator of chunks.

    With ``serve(max_batch_size=N)`` the worker decodes each request of a group, calls
    ``batch(inputs)``, then ``predict`` once, then ``unbatch(output)`` (once per yielded item for
    streams), and encodes each request's share. ``predict`` may be ``async def`` or an async
    generator; it then runs on an event loop in the worker (see ``serve(max_concurrency=...)``).

    The object is sent to the workers with cloudpickle, so a class defined in a notebook cell works.
    Keep what ``setup`` loads (models, clients, open files) out of ``__init__``: ``__init__`` runs in
    the serving process and its attributes travel to every worker.
    """

    def setup(self, device: str) -> None:
        """Prepare the worker, e.g. load a model. ``device`` is where to put it, e.g. ``"cpu"``."""

    def decode_request(self, request: Any) -> Any:
        """Turn the parsed JSON body into the input of ``predict``. Default: pass it through."""
        return request

    def predict(self, x: Any) -> Any:
        """Compute the answer. A generator function here makes the endpoint streaming."""
        raise NotImplementedError(
            f"{type(self).__name__} must define predict(self, x); subclass litkit.LitAPI and override it"
        )

    def batch(self, inputs: list[Any]) -> Any:
        """Combine decoded inputs into one input for ``predict`` (batching only).

        Default: numpy arrays are stacked with ``numpy.stack``; anything else stays a list.
        """
        numpy = sys.modules.get("numpy")  # loaded already if any input is an array: never import it here
        if numpy is not None and inputs and all(isinstance(x, numpy.ndarray) for x in inputs):
            return numpy.stack(inputs)
        return list(inputs)

    def unbatch(self, output: Any) -> Any:
        """Split ``predict``'s output into one item per request, in order (batching only).

        Default: ``list(output)``, which splits a list, a tuple or an array along its first axis.
        """
        return list(output)

    def encode_response(self, output: Any) -> Any:
        """Turn the prediction into something JSON can encode (for streams: an iterator of chunks).

        Default: pass it through.
        """
        return output


def is_streaming_api(api: Any) -> bool:
    """Whether ``api.predict`` is a generator function (sync or async), which makes the endpoint streaming."""
    predict = getattr(api, "predict", None)
    return any(
        inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f)
        for f in (predict, getattr(predict, "__func__", None))
    )


def is_async_api(api: Any) -> bool:
    """Whether ``api.predict`` is ``async def`` or an async generator function: it then runs on an
    event loop in the worker."""
    predict = getattr(api, "predict", None)
    return any(
        inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)
        for f in (predict, getattr(predict, "__func__", None))
    )
