"""The API object (and its spec) as bytes for other processes: cloudpickle, with an error that
says what cannot travel and where to create it instead. Used by ``serve()`` for the workers and by
``ray_app()`` for Ray's replicas."""

from __future__ import annotations

from typing import Any

import cloudpickle

__all__ = ["dumps_for"]


def dumps_for(obj: Any, destination: str) -> bytes:
    """``cloudpickle.dumps(obj)``, for ``destination`` (e.g. ``"worker processes"``).

    Raises:
        TypeError: cloudpickle failed; the message names the object's type, the cause, and what to do.
    """
    try:
        return cloudpickle.dumps(obj)
    except Exception as error:
        raise TypeError(
            f"cannot send the {type(obj).__name__} object to {destination}: cloudpickle failed with "
            f"{type(error).__name__}: {error}. Open files, locks, sockets, threads and loaded models cannot "
            "travel between processes; create them in setup() instead of __init__"
        ) from error
