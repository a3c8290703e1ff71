"""``ls.Callback``: LitServe's callbacks at its hook points, and the wrapping that calls them around
the hooks on every backend.

The worker-side events (``on_before_setup``/``on_after_setup``, ``..._decode_request``,
``..._predict``, ``..._encode_response``) run in the worker processes with ``lit_api=`` the API, as
in LitServe: ``with_callbacks`` gives the API a subclass whose hooks call them around the user's
own (sync, async, generator or async generator alike), and the callbacks travel with it. For a
generator ``predict`` or ``encode_response``, the "after" event comes after its last item.
``on_server_start`` and ``on_server_end`` run in the serving process with ``litserver=``;
``on_request`` (``active_requests=``, ``litserver=``, as a request arrives) and ``on_response``
(``litserver=``, once it completed) on the server's thread, as LitServe calls them on its event
loop: keep them quick. An exception in one is logged and the request goes on. Those are
``litkit.LitServer``'s (``litkit.compat``).

Stdlib only: the wrapped API's workers import this module, never the server side.
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import Any, Callable

__all__ = ["Callback", "with_callbacks", "trigger"]

# hook -> (event before it, event after it); they run in the worker.
_WORKER_EVENTS = {
    "setup": ("on_before_setup", "on_after_setup"),
    "decode_request": ("on_before_decode_request", "on_after_decode_request"),
    "predict": ("on_before_predict", "on_after_predict"),
    "encode_response": ("on_before_encode_response", "on_after_encode_response"),
}


class Callback:
    """LitServe's ``ls.Callback``: override the events you need; each gets keyword arguments."""

    def on_before_setup(self, *args: Any, **kwargs: Any) -> None:
        """Before ``setup`` runs in a worker (``lit_api=``)."""

    def on_after_setup(self, *args: Any, **kwargs: Any) -> None:
        """After ``setup`` ran in a worker (``lit_api=``)."""

    def on_before_decode_request(self, *args: Any, **kwargs: Any) -> None:
        """Before ``decode_request`` (``lit_api=``)."""

    def on_after_decode_request(self, *args: Any, **kwargs: Any) -> None:
        """After ``decode_request`` (``lit_api=``)."""

    def on_before_predict(self, *args: Any, **kwargs: Any) -> None:
        """Before ``predict`` (``lit_api=``)."""

    def on_after_predict(self, *args: Any, **kwargs: Any) -> None:
        """After ``predict`` (for a generator, after its last item; ``lit_api=``)."""

    def on_before_encode_response(self, *args: Any, **kwargs: Any) -> None:
        """Before ``encode_response`` (``lit_api=``)."""

    def on_after_encode_response(self, *args: Any, **kwargs: Any) -> None:
        """After ``encode_response`` (for a generator, after its last item; ``lit_api=``)."""

    def on_server_start(self, *args: Any, **kwargs: Any) -> None:
        """Before the server starts, in the serving process (``litserver=``)."""

    def on_server_end(self, *args: Any, **kwargs: Any) -> None:
        """After the server stopped, in the serving process (``litserver=``)."""

    def on_request(self, *args: Any, **kwargs: Any) -> None:
        """As a request arrives, on the server's thread (``active_requests=``, ``litserver=``)."""

    def on_response(self, *args: Any, **kwargs: Any) -> None:
        """Once a request completed, on the server's thread (``litserver=``)."""


def trigger(callbacks: Any, event: str, **kwargs: Any) -> None:
    """Call ``event`` on every callback, in order."""
    for callback in callbacks:
        getattr(callback, event)(**kwargs)


def with_callbacks(api: Any, callbacks: list[Callback]) -> Any:
    """A copy of ``api`` whose hooks call the worker-side events of ``callbacks`` around them (``api`` itself if none)."""
    if not callbacks:
        return api
    base = type(api)
    namespace: dict[str, Any] = {"_litkit_callbacks": tuple(callbacks), "__module__": base.__module__, "__qualname__": base.__qualname__}
    for hook, (before, after) in _WORKER_EVENTS.items():
        namespace[hook] = _around(getattr(base, hook), before, after)
    wrapped = type(base.__name__, (base,), namespace)
    clone = copy.copy(api)
    clone.__class__ = wrapped
    return clone


def _around(function: Callable[..., Any], before: str, after: str) -> Callable[..., Any]:
    """``function`` with the two events around it, of the same kind (so that litkit still sees a
    generator, a coroutine, or an async generator)."""
    if inspect.isasyncgenfunction(function):

        async def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            trigger(self._litkit_callbacks, before, lit_api=self)
            async for item in function(self, *args, **kwargs):
                yield item
            trigger(self._litkit_callbacks, after, lit_api=self)

    elif inspect.isgeneratorfunction(function):

        def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            trigger(self._litkit_callbacks, before, lit_api=self)
            yield from function(self, *args, **kwargs)
            trigger(self._litkit_callbacks, after, lit_api=self)

    elif inspect.iscoroutinefunction(function):

        async def hook(self: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            trigger(self._litkit_callbacks, before, lit_api=self)
            result = await function(self, *args, **kwargs)
            trigger(self._litkit_callbacks, after, lit_api=self)
            return result

    else:

        def hook(self: Any, *args: Any, **kwargs: Any) -> Any:
            trigger(self._litkit_callbacks, before, lit_api=self)
            result = function(self, *args, **kwargs)
            trigger(self._litkit_callbacks, after, lit_api=self)
            return result

    return functools.wraps(function)(hook)
