"""LitServe's behaviour under ``ls.LitServer`` (issue 26): LitServe-style code, real HTTP, real workers.

Each test pins a difference measured against LitServe 0.2.19 with its import swapped; its
docstring names the bug. ``litkit.serve()`` keeps litkit's own conventions (tested elsewhere).
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import socket
import threading
from typing import Any

import cloudpickle
import pytest
import requests

import litkit
import litkit as ls
import litserve_apis as apis
from runner import run  # noqa: F401 - the fixture
from conftest import wait_until

cloudpickle.register_pickle_by_value(apis)


def post(server: litkit.Server, body: Any, path: str = "/predict", **kwargs: Any) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=60, **kwargs)


def test_an_async_api_runs_its_requests_concurrently(run):
    """The bug this pins: enable_async=True was accepted but a worker ran one request at a time, so
    requests that wait on each other timed out (LitServe runs them as tasks, concurrently)."""
    server = run(ls.LitServer(apis.Rendezvous()))
    together = apis.Rendezvous.together
    with concurrent.futures.ThreadPoolExecutor(together) as pool:
        answers = list(pool.map(lambda i: post(server, {"input": i}), range(together)))
    assert [(answer.status_code, answer.json()) for answer in answers] == [(200, {"output": i}) for i in range(together)]


def test_batching_set_as_attributes_batches(run):
    """The bug this pins: max_batch_size and batch_timeout set as attributes (LitServe's style) were
    ignored, and the API was served unbatched."""
    by_attribute = apis.BatchSizes()
    by_attribute.max_batch_size = 4
    by_attribute.batch_timeout = 0.5
    for api in (by_attribute, apis.BatchSizesByAttribute()):
        server = run(ls.LitServer(api))
        assert server.status()["endpoints"][0]["max_batch_size"] == 4
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: post(server, {"input": i}).json(), range(4)))
        assert max(answer["batch_size"] for answer in answers) > 1
        server.stop()


def test_a_batched_stream_is_encoded_as_a_batch_then_split(run):
    """The bug this pins: a batched stream was unbatched per step and each request's share given to
    its own encode_response; LitServe hands encode_response the stream of unbatched lists and sends
    item i of each list it yields to request i."""
    server = run(ls.LitServer(apis.BatchedStream(max_batch_size=2, batch_timeout=1.0, stream=True)))

    def stream(name: str) -> list[Any]:
        with requests.post(server.url + "/predict", json={"input": name}, stream=True, timeout=60) as answer:
            assert answer.status_code == 200
            return [json.loads(line) for line in answer.iter_lines() if line]

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        a, b = pool.map(stream, ["a", "b"])
    assert a == [{"output": f"a-{step}"} for step in range(3)]
    assert b == [{"output": f"b-{step}"} for step in range(3)]


def test_str_chunks_are_sent_as_they_are(run):
    """The bug this pins: a str chunk gained a newline under LitServer; LitServe sends it raw."""
    server = run(ls.LitServer(apis.TextStream(stream=True)))
    answer = post(server, {"input": "hi"})
    assert answer.text == "0: hi1: hi2: hi"
    dicts = run(ls.LitServer(apis.StreamingAPI(stream=True)))
    assert post(dicts, {"n": 2}).text == '{"output": 0}\n{"output": 1}\n'  # LitServe's json.dumps(...) + "\n"


def test_errors_read_as_fastapis(run):
    """The bug this pins: LitServer answered errors in litkit's shape; LitServe's clients read
    FastAPI's {"detail": ...}, and a hook's unexpected exception reads "Internal server error"."""
    server = run(ls.LitServer(apis.Failing()))
    failed = post(server, {"input": 1})
    assert (failed.status_code, failed.text) == (500, '{"detail":"Internal server error"}')
    refused = run(ls.LitServer(apis.RefusesOdd()))
    odd = post(refused, {"input": 3})
    assert (odd.status_code, odd.json()) == (422, {"detail": "input must be even"})


def test_setup_sees_the_device_on_self(run):
    """The bug this pins: LitAPI.device was never set (LitServe sets it before setup)."""
    server = run(ls.LitServer(apis.ShowsDevice(), accelerator="cpu"))
    assert post(server, {"input": 1}).json() == {"output": "cpu"}


def test_callbacks_see_requests_that_arrive_while_the_workers_start(tmp_path):
    """The bug this pins: on_request and on_response were attached once the workers were ready, so a
    request that arrived while they started was never seen by them."""
    flag = tmp_path / "setup may end"
    counts = apis.Counts()
    lit_server = ls.LitServer(apis.SlowStart(str(flag)), callbacks=[counts])
    with socket.socket() as probe:  # a free port, known before run() returns
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    thread = threading.Thread(target=lit_server.run, kwargs={"port": port, "generate_client_file": False}, name="test-litserver-run")
    thread.start()
    answers: list[requests.Response] = []
    try:
        wait_until(lambda: _accepts(port), message="the server to listen")
        sender = threading.Thread(target=lambda: answers.append(requests.post(f"http://127.0.0.1:{port}/predict", json={"input": 3}, timeout=60)))
        sender.start()
        wait_until(lambda: counts.seen == ["request"], message="on_request while the workers start")
        flag.touch()
        sender.join(60)
        assert [(answer.status_code, answer.json()) for answer in answers] == [(200, {"output": 9})]
        wait_until(lambda: counts.seen == ["request", "response"], message="on_response")
    finally:
        flag.touch()
        wait_until(lambda: lit_server.server is not None or not thread.is_alive(), deadline_s=70, message="run() to serve")
        if lit_server.server is not None:
            lit_server.server.stop()
        thread.join(10)
    assert not thread.is_alive()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def test_a_connection_refused_early_is_not_reset(run):
    """The bug this pins: after a 401 from authorize() or a 413, answered before the body was read,
    the server closed the connection while the client still sent its body, so the client's system
    reset it: the answer was lost, or the next request on the keep-alive connection failed."""
    server = run(ls.LitServer(apis.RequestAuth(), max_payload_size=1_000_000))
    session = requests.Session()
    seen = []
    for attempt in range(8):
        for token, size in (("no", 600_000), ("1234", 1_200_000)):
            refused = session.post(server.url + "/predict", json={"input": 2, "pad": "x" * size}, headers={"Authorization": f"Bearer {token}"}, timeout=60)
            answered = session.post(server.url + "/predict", json={"input": 2}, headers={"Authorization": "Bearer 1234"}, timeout=60)
            seen.append((refused.status_code, answered.status_code, answered.json()))
    assert seen == [(401, 200, {"output": 4}), (413, 200, {"output": 4})] * 8
    session.close()


def test_json_answers_are_gzipped_when_the_client_accepts_it(run):
    """The bug this pins: Accept-Encoding: gzip was ignored; LitServe compresses JSON answers of
    1000 bytes or more (never streams)."""
    server = run(ls.LitServer(apis.LargeAnswer()))
    expected = {"result": "0" * 100_000}
    with requests.post(server.url + "/predict", json={"size": 100_000}, headers={"Accept-Encoding": "gzip"}, timeout=60, stream=True) as compressed:
        assert compressed.headers["Content-Encoding"] == "gzip"
        assert 0 < int(compressed.headers["Content-Length"]) < 100_000
        assert json.loads(gzip.decompress(compressed.raw.read())) == expected
    plain = post(server, {"size": 100_000}, headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers and plain.json() == expected
    small = post(server, {"size": 10}, headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in small.headers and small.json() == {"result": "0" * 10}
    streamed = run(ls.LitServer(apis.StreamingAPI(stream=True)))
    answer = post(streamed, {"n": 200}, headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in answer.headers and answer.text.count("\n") == 200


def test_litserves_own_paths_answer_as_litserve(run):
    """The bugs this pins: GET / answered 404 (LitServe: "litserve running"), /health answered JSON
    (LitServe: "ok" / "not ready"), /info litkit's JSON, and a custom healthcheck_path or info_path
    was refused."""
    server = run(ls.LitServer(apis.SimpleLitAPI(), healthcheck_path="/v1/health", info_path="/v1/info", model_metadata={"name": "square"}))
    root = requests.get(server.url + "/", timeout=10)
    assert (root.status_code, root.text) == (200, "litserve running")
    health = requests.get(server.url + "/v1/health", timeout=10)
    assert (health.status_code, health.text) == (200, "ok")
    info = requests.get(server.url + "/v1/info", timeout=10).json()
    assert info == {
        "model": {"name": "square"},
        "server": {"devices": ["cpu"], "workers_per_device": 1, "timeout": 30, "stream": {"/predict": False}, "max_payload_size": None, "track_requests": False},
    }
    missing = requests.get(server.url + "/nope", timeout=10)
    assert missing.status_code == 404 and "no endpoint at /nope" in missing.json()["detail"]


def test_a_spec_api_keeps_its_path_or_takes_its_own(run):
    """The bug this pins: api_path on a spec API was refused, even at the spec's own path."""
    at_default = run(ls.LitServer(apis.Embedder(spec=ls.OpenAIEmbeddingSpec(), api_path="/v1/embeddings")))
    assert post(at_default, {"model": "m", "input": "ab"}, path="/v1/embeddings").status_code == 200
    own = run(ls.LitServer(apis.Embedder(spec=ls.OpenAIEmbeddingSpec(), api_path="/v2/embed")))
    assert post(own, {"model": "m", "input": "ab"}, path="/v2/embed").json()["data"][0]["object"] == "embedding"


def test_the_small_differences(run, monkeypatch):
    """The bugs this pins: a float max_payload_size and fast_queue=True were refused; a start
    failure was not a RuntimeError (LitServe raises one); Host: 0.0.0.0 was refused on loopback."""
    server = run(ls.LitServer(apis.SimpleLitAPI(), max_payload_size=52428800.0, fast_queue=True))
    assert server.endpoint_info("/predict")["max_body_size"] == 52428800
    port = server.url.rsplit(":", 1)[1]
    via_unspecified = requests.post(f"http://0.0.0.0:{port}/predict", json={"input": 3}, timeout=10)  # LitServe's benchmark's URL
    assert (via_unspecified.status_code, via_unspecified.json()) == (200, {"output": 9})
    rebound = requests.post(server.url + "/predict", json={"input": 3}, headers={"Host": f"attacker.example:{port}"}, timeout=10)
    assert rebound.status_code == 403  # a DNS name is still refused on a loopback server
    with pytest.raises(RuntimeError, match="failed to start"):
        run(ls.LitServer(apis.FailsToStart()))


def test_openai_request_fields_are_validated(run):
    """The bug this pins: an OpenAI request with a field of the wrong type was served; LitServe's
    pydantic model answers 422."""
    server = run(ls.LitServer(ls.test_examples.TestAPI(spec=ls.OpenAISpec())))
    chat = "/v1/chat/completions"
    good = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert post(server, good, path=chat).json()["choices"][0]["message"]["content"] == "This is a generated output"
    for bad, field in (({"temperature": "hot"}, "temperature"), ({"max_tokens": "many"}, "max_tokens"), ({"messages": [{"content": "hi"}]}, "messages.0.role")):
        refused = post(server, {**good, **bad}, path=chat)
        assert refused.status_code == 422 and field in refused.json()["error"]["message"], refused.text
