"""The hook contract (tests/contract_cases.py) on the in-process server: every case an endpoint of one
``litkit.serve()`` on port 0, real workers, real HTTP. tests/ray/test_ray_conformance.py runs the same
cases on Ray Serve; both must answer every exchange the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

import contract_cases
import litkit
from conftest import Events, assert_no_children, litkit_threads, wait_until
from contract_cases import CASES, Case, send

BACKEND = "local"


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test() -> Iterator[None]:
    """The module's tests share one server (every case is an endpoint of it): the check that no
    server outlives its test (conftest's fixture of this name) is made once, when it stops (``served``)."""
    yield


class Served:
    def __init__(self, server: Any, events: Events, logged: list[tuple[str, Any]]) -> None:
        self.server = server
        self.url = server.url
        self.events = events
        self.logged = logged


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    events = Events(Path(tmp_path_factory.mktemp("contract")) / "events.jsonl")
    logged: list[tuple[str, Any]] = []
    server = litkit.serve(contract_cases.endpoints(events.path), port=0, on_log=lambda key, value: logged.append((key, value)))
    try:
        yield Served(server, events, logged)
    finally:
        server.stop()
    assert_no_children()
    assert not litkit_threads(), f"litkit threads left running: {litkit_threads()}"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_case_answers_as_the_contract_says(served: Served, case: Case) -> None:
    if BACKEND in case.not_on:
        pytest.skip(case.not_on[BACKEND])
    for exchange in case.exchanges:
        exchange.check(send(served.url, case, exchange))


def test_a_batch_of_concurrent_requests_answers_each_its_own(served: Served) -> None:
    contract_cases.check_concurrent_batch(served.url)


def test_self_log_reaches_on_log(served: Served) -> None:
    """Here ``self.log`` reaches ``serve(on_log=...)``; on Ray it goes to the replica's log."""
    send(served.url, next(case for case in CASES if case.name == "log"), contract_cases.Exchange({"n": 7}, 200, None))
    wait_until(lambda: ("seen", 7) in served.logged, message="self.log('seen', 7) at on_log")


def test_a_client_that_leaves_closes_the_generator(served: Served) -> None:
    contract_cases.check_hang_up(served.url, "", served.events)
