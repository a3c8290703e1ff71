"""A request's phases in the relay (litkit.server.phases): the table of moves is whole and strict."""

from __future__ import annotations

import pytest

from litkit.server.phases import ALLOWED_MOVES as ALLOWED
from litkit.server.phases import ANSWER_NOT_BEGUN, RELAYING, STREAM_BEGAN, Phase, check_move


def test_every_phase_is_reachable_from_head_and_every_way_ends_released():
    reachable, frontier = {Phase.HEAD}, [Phase.HEAD]
    while frontier:
        for to in ALLOWED[frontier.pop()]:
            if to not in reachable:
                reachable.add(to)
                frontier.append(to)
    assert reachable == set(Phase)
    for phase in Phase:
        ends, frontier = set(), [phase]
        while frontier:
            current = frontier.pop()
            if not ALLOWED[current]:
                ends.add(current)
            frontier.extend(ALLOWED[current])
        assert ends == {Phase.RELEASED}, phase


def test_a_move_the_table_does_not_allow_raises_and_says_what_is_allowed():
    assert check_move("r1", Phase.RUNNING, Phase.STREAMING) is Phase.STREAMING
    with pytest.raises(RuntimeError, match=r"request r1 cannot move from RELEASED to ANSWERED; from RELEASED it may move to: none"):
        check_move("r1", Phase.RELEASED, Phase.ANSWERED)
    # Work under way is cancelled before it is released: a release would leave the worker running.
    for running in (Phase.QUEUED, Phase.RUNNING, Phase.STREAMING):
        with pytest.raises(RuntimeError, match=f"cannot move from {running.name} to RELEASED"):
            check_move("r2", running, Phase.RELEASED)
    # A stream's headers are out: it cannot become a whole answer's status again.
    with pytest.raises(RuntimeError, match="cannot move from CANCELLED_STREAMING to CANCELLED"):
        check_move("r3", Phase.CANCELLED_STREAMING, Phase.CANCELLED)


def test_the_named_groups_of_phases():
    assert ANSWER_NOT_BEGUN == {Phase.QUEUED, Phase.RUNNING}
    assert RELAYING == {Phase.RUNNING, Phase.STREAMING}
    assert STREAM_BEGAN == {Phase.STREAMING, Phase.CANCELLED_STREAMING}
