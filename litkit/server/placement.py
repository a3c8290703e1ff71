"""Where a server made by ``serve()`` runs, and what the code around the call asks of it.

A server's loop runs in a sub-interpreter (Python 3.13+), a process of its own (3.10-3.12), or a
thread of this interpreter (``litkit.server.host``). ``in_this_interpreter()`` and
``answering_root_with()`` are blocks that code calling ``serve()`` (``litkit.compat``'s
``LitServer``, ``litkit.server.terminal``) wraps around the call; ``host_type()`` picks the place.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Callable, Iterator

from .endpoints import EndpointPlan, ServingState
from .host import Host, InterpreterHost, ProcessHost, ThreadHost, caller_only
from .interpreters import thread_setting, unavailable_reason

__all__ = ["Host", "PLACES", "answering_root_with", "host_type", "in_this_interpreter", "prepare_hook", "root_answer"]

logger = logging.getLogger("litkit.server")

_here = threading.local()


@contextlib.contextmanager
def in_this_interpreter(reason: str, prepare: Callable[[ServingState], None] | None = None) -> Iterator[None]:
    """Servers made by ``serve()`` in this block, on this thread, run on a thread of this
    interpreter, not in a sub-interpreter or a process of their own: for code that must reach
    into the server's state, or a process that runs nothing else (``reason`` says why; it is
    logged). ``prepare`` is called with that state before the server takes its first request
    (``litkit.compat`` adds LitServe's ``on_request``/``on_response`` there)."""
    previous = getattr(_here, "reason", None), getattr(_here, "prepare", None)
    _here.reason, _here.prepare = reason, prepare
    try:
        yield
    finally:
        _here.reason, _here.prepare = previous


@contextlib.contextmanager
def answering_root_with(text: str, openapi: bool = True) -> Iterator[None]:
    """Servers made by ``serve()`` in this block, on this thread, answer a ``GET /`` that does not
    ask for HTML with ``text`` instead of the page (``LitServer``: LitServe's ``litserve running``);
    with ``openapi=False`` (``LitServer(disable_openapi_url=True)``) they serve neither
    ``/openapi.json`` nor the page that reads it, and ``/`` is ``text`` for every client."""
    previous = getattr(_here, "root", None)
    _here.root = (text, openapi)
    try:
        yield
    finally:
        _here.root = previous


PLACES = {InterpreterHost: "a sub-interpreter", ProcessHost: "a process of its own", ThreadHost: "a thread of this interpreter"}


def host_type(plans: list[EndpointPlan]) -> type[Host]:
    """Where a server for ``plans`` runs: a thread of this interpreter where an API's hooks, a block
    of ``in_this_interpreter()`` or ``LITKIT_SUBINTERPRETER=0`` ask for it; else a sub-interpreter
    where this Python has them, else a process of its own."""
    here = caller_only(plans) or getattr(_here, "reason", None) or thread_setting()
    if here is not None:
        logger.info("serving from a thread of this interpreter: %s", here)
        return ThreadHost
    return InterpreterHost if unavailable_reason() is None else ProcessHost


def prepare_hook() -> Callable[[ServingState], None] | None:
    """The ``prepare`` of the ``in_this_interpreter()`` block this thread is in, if any."""
    return getattr(_here, "prepare", None)


def root_answer() -> tuple[str | None, bool]:
    """What ``GET /`` answers and whether ``/openapi.json`` is served, as ``answering_root_with()`` set them on this thread."""
    return getattr(_here, "root", None) or (None, True)
