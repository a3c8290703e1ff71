"""The hook contract (tests/contract_cases.py) on a real local Ray Serve: every case a deployment of
one ``litkit.ray_app`` application, behind its router, real HTTP through Serve's proxy.
tests/contract/test_conformance.py runs the same cases on the in-process server; both must answer
every exchange the same way. Marked ``ray`` (CI's Ray step)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

if os.environ.get("LITKIT_REQUIRE_RAY"):  # CI's Ray step: a missing extra fails instead of skipping
    import ray  # noqa: F401
else:
    pytest.importorskip("ray", reason="needs the Ray extra: pip install 'litkit[ray]'")

import contract_apis  # noqa: E402
import contract_cases  # noqa: E402
import litkit  # noqa: E402
from conftest import Events  # noqa: E402
from contract_cases import CASES, Case, send  # noqa: E402

# Ray's own modules warn about their use of deprecated APIs (pydantic's, for one): not ours to fix.
# Deploying a replica per case on 2 cores takes a while: the first test's budget includes it.
pytestmark = [pytest.mark.ray, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray"), pytest.mark.timeout(420)]

BACKEND = "ray"


class Deployed:
    def __init__(self, url: str, events: Events) -> None:
        self.url = url
        self.events = events


@pytest.fixture(scope="module")
def deployed(ray_serve: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    from ray import serve

    from ray.serve import RunTarget

    events = Events(Path(tmp_path_factory.mktemp("contract-ray")) / "events.jsonl")
    fraction = {"num_cpus": 0.05}
    serve.run_many(
        [
            RunTarget(litkit.ray_app(contract_cases.endpoints(events.path), ray_actor_options=fraction), name="contract", route_prefix="/contract"),
            RunTarget(litkit.ray_app(contract_apis.Unhealthy(), ray_actor_options=fraction), name="unhealthy", route_prefix="/unhealthy"),
        ]
    )
    try:
        yield Deployed(f"{ray_serve}/contract", events)
    finally:
        serve.delete("contract")
        serve.delete("unhealthy")


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_case_answers_as_the_contract_says(deployed: Deployed, case: Case) -> None:
    if BACKEND in case.not_on:
        pytest.skip(case.not_on[BACKEND])
    for exchange in case.exchanges:
        exchange.check(send(deployed.url, case, exchange))


def test_a_batch_of_concurrent_requests_answers_each_its_own(deployed: Deployed) -> None:
    contract_cases.check_concurrent_batch(deployed.url)


def test_a_client_that_leaves_closes_the_generator(deployed: Deployed) -> None:
    """As on the in-process server, through Serve's proxy and the application's router."""
    base, prefix = deployed.url.rsplit("/", 1)
    contract_cases.check_hang_up(base, "/" + prefix, deployed.events)


def test_the_api_s_health_hook_answers_health(deployed: Deployed) -> None:
    """As on the in-process server: ``health()`` saying no is a 503 with the reason."""
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(deployed.url.rsplit("/", 1)[0] + "/unhealthy/health", timeout=contract_cases.DEADLINE_S)
    assert answer.value.code == 503
    assert json.load(answer.value) == {"status": "unavailable", "reason": "Unhealthy.health() returned False"}


def test_an_api_with_authorize_is_refused_rather_than_served_open() -> None:
    """Ray's replicas cannot call ``authorize`` before the body: ``ray_app`` says so instead of
    serving an API that checks its callers to everyone."""
    with pytest.raises(TypeError, match=r"Guarded defines authorize\(\), which Ray Serve replicas do not call"):
        litkit.ray_app(contract_apis.Guarded())
