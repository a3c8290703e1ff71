"""LitServe's callbacks under ``litkit.LitServer``: the list it is given, checked, and the server-side
events ``on_request`` and ``on_response``. The class and the worker-side events are the contract's
(``litkit.contract.callbacks``), which every backend calls."""

from __future__ import annotations

import logging
from typing import Any, Callable

from ..contract.callbacks import Callback, trigger, with_callbacks

__all__ = ["Callback", "check_callbacks", "request_listener", "with_callbacks", "trigger"]

logger = logging.getLogger("litkit.compat")


def check_callbacks(callbacks: Any) -> list[Callback]:
    """LitServe's ``callbacks=`` (one Callback, or a list) as a list.

    Raises:
        ValueError: something that is not an ``ls.Callback``.
    """
    if callbacks is None:
        return []
    items = callbacks if isinstance(callbacks, (list, tuple)) else [callbacks]
    for item in items:
        if not isinstance(item, Callback):
            raise ValueError(f"callbacks must be ls.Callback instances, got {type(item).__name__}")
    return list(items)


def request_listener(callbacks: list[Callback], litserver: Any) -> Callable[[str, Any], None]:
    """A ``RequestTracker`` listener that calls ``on_request`` and ``on_response`` (server side)."""

    def listen(event: str, record: Any) -> None:
        if event == "finished" and record.state != "completed":
            return  # LitServe calls on_response for answers only, not for errors or cancellations
        name, kwargs = ("on_request", {"active_requests": litserver.active_requests}) if event == "admitted" else ("on_response", {})
        for callback in callbacks:
            try:
                getattr(callback, name)(litserver=litserver, **kwargs)
            except Exception:  # a failing callback must not fail the request
                logger.exception("%s.%s raised", type(callback).__name__, name)

    return listen
