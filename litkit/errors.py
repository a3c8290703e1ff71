"""Every error litkit raises, in one place.

This is the bottom layer: it imports nothing of litkit's own. Errors that cross the process boundary
(``HTTPError`` raised in a worker, ``WorkerStartError`` built from a worker's report) must survive a
pickle round trip, so each one keeps its constructor arguments in ``args``.
"""

from __future__ import annotations

import json

__all__ = [
    "LitkitError",
    "HTTPError",
    "WorkerStartError",
    "PortInUseError",
    "ServerStoppedError",
    "http_exception_status",
    "http_exception_detail",
]


class LitkitError(Exception):
    """Base class of every error litkit raises on purpose."""


class HTTPError(LitkitError):
    """Answer the current request with ``status`` and a JSON ``{"error": message}`` body.

    Raise it from any hook (``decode_request``, ``predict``, ``encode_response``) to refuse a
    request with a status of your choosing, for example ``HTTPError(422, "input must be a list")``.
    The client-side helpers (``Server.predict``, ``Client.predict``) raise it too when the server
    answers with an error status.

    Args:
        status: an HTTP status code from 400 to 599.
        message: what went wrong, shown to the client as is.

    Raises:
        ValueError: if ``status`` is not an int between 400 and 599.
    """

    def __init__(self, status: int, message: str = "") -> None:
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(
                f"HTTPError status must be an int from 400 to 599, got {status!r}; "
                "use 4xx for a bad request and 5xx for a server-side failure"
            )
        super().__init__(status, message)
        self.status = status
        self.message = str(message)

    def __str__(self) -> str:
        return f"{self.status}: {self.message}" if self.message else str(self.status)


class WorkerStartError(LitkitError, RuntimeError):
    """A worker process failed to start: ``setup`` raised, the API could not be loaded, or the
    process died or stayed silent past ``start_timeout``.

    Attributes:
        worker_id: the index of the worker that failed.
        reason: one line saying what happened.
        worker_traceback: the traceback text the worker reported, or "" if it died without one.
    """

    def __init__(self, worker_id: int, reason: str, worker_traceback: str = "") -> None:
        super().__init__(worker_id, reason, worker_traceback)
        self.worker_id = worker_id
        self.reason = reason
        self.worker_traceback = worker_traceback

    def __str__(self) -> str:
        text = f"worker {self.worker_id} failed to start: {self.reason}"
        if self.worker_traceback:
            text += "\n\nTraceback from the worker process:\n" + self.worker_traceback.rstrip()
        return text


class PortInUseError(LitkitError, OSError):
    """The port asked for is held by another process."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return (
            f"port {self.port} on {self.host} is already in use by another process; "
            "pass port=0 to let the system pick a free port, or stop the program holding it"
        )


class ServerStoppedError(LitkitError):
    """The server was stopped, so it cannot take this call."""


def http_exception_status(error: BaseException) -> tuple[int, str] | None:
    """(status, message) of a ``fastapi.HTTPException`` (or Starlette's), else None.

    Recognised by its ``status_code`` (an int from 400 to 599) and ``detail`` attributes, so
    fastapi need not be installed, nor is it imported. A ``detail`` that is not a str is given as its JSON.
    """
    status = getattr(error, "status_code", None)
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599 or not hasattr(error, "detail"):
        return None
    detail = error.detail
    if not isinstance(detail, str):
        try:
            detail = json.dumps(detail)
        except (TypeError, ValueError):
            detail = str(detail)
    return status, detail


def http_exception_detail(error: BaseException) -> object:
    """The ``detail`` of a ``fastapi.HTTPException`` as JSON can carry it (LitServe answers
    ``{"detail": detail}``): as it is when JSON can encode it, else its ``str``."""
    detail = getattr(error, "detail", None)
    try:
        json.dumps(detail)
    except (TypeError, ValueError):
        return str(detail)
    return detail
