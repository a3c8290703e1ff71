"""Admission: whether a request to an endpoint is taken in, and its job in the endpoint's pool.

The relay (``litkit.server.relay``) runs the access checks (``litkit.server.access.check_access``)
and then these, all before any body is read: the size of the request line and headers (431) and the
announced body (413, or 400 for a ``Content-Length`` that is not a number; ``litkit.server.headers``).
Once the body is in, ``submit`` counts the request in the endpoint's tracker (its record, which the
relay then holds and changes only through the tracker) and queues its job, which carries the
request's id and key, not its record.
The small handlers (``litkit.server.handlers``) use the request ids and the header limit too.
"""

from __future__ import annotations

import enum
import itertools
import re
import secrets

from tornado.httputil import HTTPHeaders

from ..pool.jobs import Job, NoWorkers, QueueFull
from ..pool.tracking import RequestRecord
from ..wire.forms import mark_form
from .endpoints import EndpointState
from .headers import BadHeader, content_length

__all__ = [
    "HEADER_LIMIT", "DISCARD_PAST_LIMIT", "BODY_LIMIT_SLACK", "Refusal", "new_request_id", "fresh_id",
    "oversized_headers", "when_to_refuse", "submit",
]

# Request line and headers larger than this get 431; Tornado closes connections whose headers
# pass MAX_HEADER_BYTES (litkit.server.loop) before reading them whole.
HEADER_LIMIT = 32 * 1024
# Past max_body_size, how much of a body refused with 413 is still read and dropped, so that the
# client reads the 413 and keeps its connection (see when_to_refuse).
DISCARD_PAST_LIMIT = 8 * 1024 * 1024
# Headroom past max_body_size for the connection's own limit, so the request answers 413 first.
BODY_LIMIT_SLACK = 256 * 1024
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Request ids made here: a random prefix per process, then a counter (no getrandom per request).
_ID_PREFIX = secrets.token_hex(4)
_ID_COUNTER = itertools.count(1)


def new_request_id(offered: str | None) -> str:
    """The client's ``X-Request-ID`` when it is sane (1-128 of ``A-Za-z0-9._:-``), else a fresh id."""
    if offered and _CLIENT_REQUEST_ID.fullmatch(offered):
        return offered
    return fresh_id()


def fresh_id() -> str:
    """An id no other request of this process has had."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):08x}"


def oversized_headers(method: str, uri: str, headers: HTTPHeaders) -> str | None:
    """The 431 message when a request line and headers pass ``HEADER_LIMIT`` bytes, else None."""
    size = len(method) + len(uri) + sum(len(name) + len(value) + 4 for name, value in headers.get_all())
    if size <= HEADER_LIMIT:
        return None
    return f"request headers of {size} bytes exceed {HEADER_LIMIT} bytes; send smaller headers"


class Refusal(enum.Enum):
    """When a refusal decided from a request's headers goes out."""

    NOW = "now"  # the request has no body: nothing to wait for
    AFTER_BODY = "after_body"  # once the body is read and dropped, so the client reads the answer
    NOW_AND_CLOSE = "now_and_close"  # at once, with Connection: close (the body is not worth reading)


def when_to_refuse(headers: HTTPHeaders, discard: int) -> Refusal:
    """When to send a refusal decided before the body is read. A server that answers and closes
    while the client still sends makes the client's system reset the connection, and the client may
    never read the answer (nor reuse the connection), so the body is read and dropped first; but a
    body that announces more than ``discard`` bytes, or a ``Content-Length`` that is not a number,
    is not worth reading."""
    try:
        announced = content_length(headers.get("Content-Length"), discard)
    except BadHeader:
        return Refusal.NOW_AND_CLOSE
    if announced == 0 or (announced is None and "chunked" not in headers.get("Transfer-Encoding", "").lower()):
        return Refusal.NOW
    return Refusal.AFTER_BODY


def submit(
    endpoint: EndpointState, request_id: str, uri: str, arrived: float, body: bytes, form_type: str | None, own_id: bool,
) -> tuple[RequestRecord, Job]:
    """Count a request whose body is in (``arrived``: when its head came, ``time.monotonic()``) in
    the endpoint's tracker and queue its job; its record (the caller's from now on) and its job.

    Raises:
        QueueFull, NoWorkers: the pool takes no more; the request is counted ``failed``.
    """
    record = endpoint.tracker.admit(request_id, uri, arrived)
    if form_type is not None:
        body = mark_form(form_type, body)  # the worker parses the form
    # The job's key on the wire is ours: a client's X-Request-ID may repeat (two requests in
    # flight with one id), so it is echoed, never used to match a worker's DONE.
    job = Job(request_id, body, key=None if own_id else fresh_id())
    try:
        endpoint.pool.submit(job)
    except (QueueFull, NoWorkers) as error:
        endpoint.tracker.finish(record, "failed", str(error))
        raise
    return record, job
