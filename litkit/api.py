"""The user-facing API class: four hooks a worker calls for every request."""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["LitAPI", "is_streaming_api"]


class LitAPI:
    """Subclass this and override the hooks; litkit calls them inside each worker process.

    ``setup(device)`` runs once per worker before it takes requests. For each request the worker
    calls ``decode_request`` on the parsed JSON body, ``predict`` on what it returns, and
    ``encode_response`` on the prediction. When ``predict`` is a generator function the endpoint
    streams: ``encode_response`` then receives the generator and returns an iterator of chunks.

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

    def encode_response(self, output: Any) -> Any:
        """Turn the prediction into something JSON can encode (for streams: an iterator of chunks).

        Default: pass it through.
        """
        return output


def is_streaming_api(api: Any) -> bool:
    """Whether ``api.predict`` is a generator function, which makes the endpoint streaming."""
    predict = getattr(api, "predict", None)
    return inspect.isgeneratorfunction(predict) or inspect.isgeneratorfunction(
        getattr(predict, "__func__", None)
    )
