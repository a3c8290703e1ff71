"""A request's life in the relay as one explicit state: the phases and the moves allowed between them.

``litkit.server.relay.EndpointRequest`` holds one ``Phase`` and changes it only through
``check_move``, which raises on a move that ``ALLOWED_MOVES`` does not list. The usual way is
HEAD, BODY, QUEUED, RUNNING, then STREAMING or not, ANSWERED, RELEASED. Off it: a refusal before
the body (HEAD to ANSWERED, or to DISCARDING while the body is read and dropped, then ANSWERED); a
refusal once the body is in (BODY to ANSWERED: 413, 503); a cancel (QUEUED or RUNNING to
CANCELLED, STREAMING to CANCELLED_STREAMING, then ANSWERED with an error for a client still there,
or RELEASED); a client that leaves before its request is complete (HEAD, BODY or DISCARDING to
RELEASED).

A phase says what has been written (nothing, the stream's headers, the whole answer) and what the
work is doing (queued, running, stopped). Cancelling is a move, not a flag: once the work stopped,
the only thing left is an error answer to a client still there, then the release.
"""

from __future__ import annotations

import enum

__all__ = ["Phase", "ALLOWED_MOVES", "check_move", "ANSWER_NOT_BEGUN", "STREAM_BEGAN", "RELAYING"]


class Phase(enum.Enum):
    """Where one request is."""

    HEAD = "head"  # its headers are being checked
    BODY = "body"  # the checks passed; its body is arriving
    DISCARDING = "discarding"  # refused before its body: the body is read and dropped, then the refusal goes out
    QUEUED = "queued"  # a job in the endpoint's pool, no worker yet
    RUNNING = "running"  # a worker has it; its pipe is read; no byte of the answer yet
    STREAMING = "streaming"  # the stream's headers are out; chunks go out as they come
    CANCELLED = "cancelled"  # its work was stopped before the answer began; an error answer may still go out
    CANCELLED_STREAMING = "cancelled_streaming"  # its work was stopped mid-stream; a final error line may still go out
    ANSWERED = "answered"  # the whole answer is written; the socket may still be sending it
    RELEASED = "released"  # over for the server: no timers, no pipe, out of the in-flight set


ALLOWED_MOVES: dict[Phase, frozenset[Phase]] = {
    Phase.HEAD: frozenset({Phase.BODY, Phase.DISCARDING, Phase.ANSWERED, Phase.RELEASED}),
    Phase.BODY: frozenset({Phase.QUEUED, Phase.ANSWERED, Phase.RELEASED}),
    Phase.DISCARDING: frozenset({Phase.ANSWERED, Phase.RELEASED}),
    Phase.QUEUED: frozenset({Phase.RUNNING, Phase.CANCELLED, Phase.ANSWERED}),
    Phase.RUNNING: frozenset({Phase.STREAMING, Phase.CANCELLED, Phase.ANSWERED}),
    Phase.STREAMING: frozenset({Phase.CANCELLED_STREAMING, Phase.ANSWERED}),
    Phase.CANCELLED: frozenset({Phase.ANSWERED, Phase.RELEASED}),
    Phase.CANCELLED_STREAMING: frozenset({Phase.ANSWERED, Phase.RELEASED}),
    Phase.ANSWERED: frozenset({Phase.RELEASED}),
    Phase.RELEASED: frozenset(),
}

# No byte of the answer is written and none is promised: an end of file may be a half-close to probe.
ANSWER_NOT_BEGUN = frozenset({Phase.QUEUED, Phase.RUNNING})
# The stream's headers are out: an error is a final line (or SSE event), not a status.
STREAM_BEGAN = frozenset({Phase.STREAMING, Phase.CANCELLED_STREAMING})
# The worker's pipe is read and what it says is written on.
RELAYING = frozenset({Phase.RUNNING, Phase.STREAMING})


def check_move(request_id: str, current: Phase, to: Phase) -> Phase:
    """``to`` when a request may move there from ``current``.

    Raises:
        RuntimeError: the move is not one the table above allows (a bug in the relay, not the client's).
    """
    if to not in ALLOWED_MOVES[current]:
        allowed = ", ".join(sorted(phase.name for phase in ALLOWED_MOVES[current])) or "none"
        raise RuntimeError(f"request {request_id} cannot move from {current.name} to {to.name}; from {current.name} it may move to: {allowed}")
    return to
