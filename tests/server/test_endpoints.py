"""Several endpoints on one server: each with its own workers, stream mode, limits and counts."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json

import apis
import pytest
import requests
from conftest import assert_no_children, litkit_threads, wait_until

import litkit


def test_two_endpoints_each_with_its_own_workers_and_stream_mode(serve, events):
    server = serve({"/double": apis.Doubler(), "/tick": litkit.Endpoint(apis.Ticker(events.path), workers=2)})
    assert server.paths == ["/double", "/tick"]
    assert server.api_path == "/double"

    response = requests.post(server.url + "/double", json={"input": 21}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"output": 42}

    with requests.post(server.url + "/tick", json={"n": 3, "interval": 0}, stream=True, timeout=10) as response:
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == "application/x-ndjson"
        assert [json.loads(line) for line in response.iter_lines() if line] == [{"i": 0}, {"i": 1}, {"i": 2}]

    assert server.predict({"input": 5}, path="/double") == {"output": 10}
    with server.stream({"n": 2, "interval": 0}, path="/tick") as chunks:
        assert list(chunks) == [{"i": 0}, {"i": 1}]

    status = server.status()
    double, tick = status["endpoints"]
    assert (double["path"], double["api"], double["stream"], len(double["workers"])) == ("/double", "Doubler", False, 1)
    assert (tick["path"], tick["api"], tick["stream"], len(tick["workers"])) == ("/tick", "Ticker", True, 2)
    assert double["counts"]["completed"] == 2 and tick["counts"]["completed"] == 2
    # The top-level keys hold every endpoint together; each worker names its endpoint.
    assert status["counts"]["completed"] == 4
    assert [(w["endpoint"], w["id"]) for w in status["workers"]] == [("/double", 0), ("/tick", 0), ("/tick", 1)]
    assert len({w["pid"] for w in status["workers"]}) == 3, "each endpoint runs its own processes"
    assert [r["path"] for r in status["recent"]] == ["/tick", "/double", "/tick", "/double"]  # newest first

    info = requests.get(server.url + "/info", timeout=10).json()
    assert [(e["path"], e["api"], e["workers"]) for e in info["endpoints"]] == [("/double", "Doubler", 1), ("/tick", "Ticker", 2)]
    assert info["paths"]["predict"] == "/double"
    assert requests.get(server.url + "/health", timeout=10).json() == {"status": "ok"}

    missing = requests.post(server.url + "/predict", json={}, timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"] == "no endpoint at /predict; the endpoints are POST /double, POST /tick"
    assert "2 endpoints: /double, /tick" in repr(server)


def test_each_endpoint_has_its_own_limits(serve, tmp_path):
    release = tmp_path / "release"
    server = serve({"/slow": litkit.Endpoint(apis.Echo(), timeout=0.3), "/echo": litkit.Endpoint(apis.Echo(), max_body_size=100)})
    late = requests.post(server.url + "/slow", json={"wait_for": str(release)}, timeout=10)
    assert late.status_code == 504, late.text
    assert late.json()["error"].startswith("no response within timeout=0.3s")
    release.touch()
    # /echo has no timeout, but its own body limit.
    assert requests.post(server.url + "/echo", json={"x": 1}, timeout=10).json() == {"echo": {"x": 1}}
    too_big = requests.post(server.url + "/echo", json={"x": "a" * 200}, timeout=10)
    assert too_big.status_code == 413
    assert "max_body_size=100" in too_big.json()["error"]
    assert requests.post(server.url + "/slow", json={"x": "a" * 200}, timeout=10).status_code == 200
    wait_until(lambda: server.status()["endpoints"][0]["counts"]["timed_out"] == 1, message="the timeout counted on /slow only")
    assert server.status()["endpoints"][1]["counts"]["timed_out"] == 0


def test_a_queued_request_on_one_endpoint_does_not_wait_for_another(serve, tmp_path, events):
    """Each endpoint has its own queue: a busy endpoint does not hold up the other one."""
    release = tmp_path / "release"
    server = serve({"/busy": apis.Echo(events.path), "/free": apis.Doubler()})
    with _post_in_background(server.url + "/busy", {"tag": "held", "wait_for": str(release)}) as pending:
        events.wait_for("request")
        assert server.predict({"input": 4}, path="/free", timeout=5) == {"output": 8}
        release.touch()
        assert pending.result(timeout=10) == {"echo": {"tag": "held", "wait_for": str(release)}}


@contextlib.contextmanager
def _post_in_background(url, payload):
    """POST on another thread; yields the future of the JSON answer."""
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        yield executor.submit(lambda: requests.post(url, json=payload, timeout=10).json())


@pytest.mark.parametrize(
    ("api", "options", "error", "message"),
    [
        (
            {"/a": apis.Doubler(), "/info": apis.Doubler()}, {}, ValueError,
            r"endpoint path '/info' must be a path starting with '/' other than /health, /info, /metrics",
        ),
        ({"a": apis.Doubler()}, {}, ValueError, r"endpoint path 'a' must be a path starting with '/'"),
        ({}, {}, ValueError, r"serve\(\) got an empty dict"),
        ({"/a": apis.Doubler()}, {"api_path": "/b"}, ValueError, r"api_path applies to serve\(api\) only"),
        ({"/a": apis.Doubler, "/b": apis.Doubler()}, {}, TypeError, r"got the class Doubler; call it: serve\(Doubler\(\)\)"),
        ({"/a": litkit.Endpoint(apis.Doubler(), workers=0)}, {}, ValueError, r"workers must be an int from 1 to 1024, got 0"),
        ({"/a": litkit.Endpoint(apis.Doubler(), stream=True)}, {}, ValueError, r"stream=True but Doubler.predict is not a generator"),
    ],
    ids=["reserved", "no-slash", "empty", "api_path", "class", "workers", "stream"],
)
def test_endpoint_options_are_validated_before_any_process_starts(api, options, error, message):
    with pytest.raises(error, match=message):
        litkit.serve(api, port=0, **options)
    assert not litkit_threads()
    assert_no_children()


def test_endpoint_refuses_options_that_are_not_per_endpoint():
    with pytest.raises(TypeError, match=r"Endpoint\(\) got port, which is not a per-endpoint option; use one of workers, stream"):
        litkit.Endpoint(apis.Doubler(), port=9000)


def test_one_endpoint_failing_to_start_stops_them_all(tmp_path):
    with pytest.raises(litkit.WorkerStartError, match="model weights not found"):
        litkit.serve({"/ok": litkit.Endpoint(apis.Echo(), workers=2), "/broken": apis.FailingSetup()}, port=0)
    assert not litkit_threads()
    assert_no_children()


def test_every_per_endpoint_option_is_a_serve_option_and_reaches_the_endpoint(serve):
    import inspect

    from litkit.server.endpoints import ENDPOINT_OPTIONS

    assert set(ENDPOINT_OPTIONS) <= set(inspect.signature(litkit.serve).parameters)
    server = serve({"/a": litkit.Endpoint(apis.Doubler(), workers=2, max_queue=5, timeout=3), "/b": apis.Doubler()}, timeout=7, accelerator="cpu")
    a, b = server.endpoint_info("/a"), server.endpoint_info("/b")
    assert (a["workers"], a["timeout"], b["workers"], b["timeout"]) == (2, 3, 1, 7)


def test_batching_and_async_concurrency_are_per_endpoint(serve, tmp_path):
    """issue-6a's scheduling options set per endpoint: /batch groups requests, /async overlaps them,
    /plain does neither."""
    from conftest import Events

    batch_events, async_events = Events(tmp_path / "batch.jsonl"), Events(tmp_path / "async.jsonl")
    server = serve({
        "/batch": litkit.Endpoint(apis.BatchDoubler(batch_events.path), max_batch_size=4, batch_timeout=0.5),
        "/async": litkit.Endpoint(apis.AsyncSleeper(async_events.path), max_concurrency=4),
        "/plain": apis.Doubler(),
    })
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        batched = [pool.submit(server.predict, {"input": i, "tag": i}, 10, "/batch") for i in range(4)]
        overlapped = [pool.submit(server.predict, {"tag": i, "delay": 0.3}, 10, "/async") for i in range(4)]
        assert [f.result() for f in batched] == [{"output": 2 * i} for i in range(4)]
        assert sorted(f.result()["tag"] for f in overlapped) == [0, 1, 2, 3]
    assert max(e["size"] for e in batch_events.named("batch")) > 1, "requests to /batch were grouped"
    starts_before_first_end = [e for e in async_events.named("started") if e["t"] < async_events.named("finally")[0]["t"]]
    assert len(starts_before_first_end) > 1, "one /async worker ran requests at the same time"
    assert server.predict({"input": 3}, path="/plain") == {"output": 6}
    info = {e["path"]: e for e in server.status()["endpoints"]}
    assert (info["/batch"]["max_batch_size"], info["/async"]["max_concurrency"], info["/plain"]["max_batch_size"]) == (4, 4, 1)


def test_a_chat_spec_refuses_batching_a_predict_that_does_not_stream_under_serve():
    """litkit.serve() wraps each stream of a batch in a chat spec's envelopes (tests/specs/test_specs.py),
    but has no batched order for a chat spec's single answers; LitServer batches them in LitServe's
    (tests/compat/test_litserve_examples.py). Async APIs take a spec (contract case async_chat)."""
    with pytest.raises(ValueError, match=r"spec=OpenAIChat\(\) answers a batch under litkit.serve\(\) only when predict streams"):
        litkit.serve(apis.ChatOnce(), spec=litkit.specs.OpenAIChat(), max_batch_size=2, port=0)
    assert not litkit_threads()
