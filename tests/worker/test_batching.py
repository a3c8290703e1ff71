"""Dynamic batching: queued requests grouped into one predict call, each answered on its own."""

from __future__ import annotations

import concurrent.futures
import json
import time

import pytest
import requests

import apis
import litkit
from conftest import ChunkReader, raw_post, wait_until


def _post_all(server, payloads, timeout=10.0):
    """POST every payload at once (one thread each); return the responses in order."""
    with concurrent.futures.ThreadPoolExecutor(len(payloads)) as pool:
        futures = [pool.submit(requests.post, server.url + "/predict", json=p, timeout=timeout) for p in payloads]
        return [f.result() for f in futures]


def test_queued_requests_go_through_one_predict_call_and_each_gets_its_own_answer(serve, events):
    server = serve(apis.BatchDoubler(events.path), max_batch_size=4, batch_timeout=5.0)
    started = time.monotonic()
    responses = _post_all(server, [{"input": i, "tag": i} for i in range(4)])
    assert [r.json() for r in responses] == [{"output": 2 * i} for i in range(4)]
    assert [e["size"] for e in events.named("batch")] == [4]
    # A full batch goes out at once: it never waits for batch_timeout.
    assert time.monotonic() - started < 4.0
    assert server.status()["counts"]["completed"] == 4


def test_a_partial_batch_waits_for_batch_timeout_and_no_longer(serve, events):
    server = serve(apis.BatchDoubler(events.path), max_batch_size=8, batch_timeout=0.3)
    sent = time.monotonic()
    assert server.predict({"input": 5}) == {"output": 10}
    (batch,) = events.named("batch")
    assert batch["size"] == 1
    waited = batch["t"] - sent
    assert 0.25 <= waited < 0.3 + 2.0, f"the lone request waited {waited:.3f}s for company"


def test_errors_in_decode_fail_only_their_own_request(serve, events):
    server = serve(apis.BatchDoubler(events.path), max_batch_size=3, batch_timeout=5.0)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        good = pool.submit(requests.post, server.url + "/predict", json={"input": 1, "tag": "good"}, timeout=10)
        refused = pool.submit(requests.post, server.url + "/predict", json={"raise": "http"}, timeout=10)
        broken = pool.submit(requests.post, server.url + "/predict", data=b"{not json", timeout=10)
        good, refused, broken = good.result(), refused.result(), broken.result()
    assert good.status_code == 200 and good.json() == {"output": 2}
    assert refused.status_code == 422 and refused.json()["error"] == "input must be a number"
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
    assert [e["tags"] for e in events.named("batch")] == [["good"]]


def test_a_size_mismatch_is_a_500_that_says_so_for_every_request_of_the_batch(serve, events):
    server = serve(apis.BatchDoubler(events.path), max_batch_size=3, batch_timeout=5.0)
    responses = _post_all(server, [{"input": 1}, {"input": 2, "short": True}, {"input": 3}])
    for response in responses:
        assert response.status_code == 500
        assert "expected 3 outputs" in response.json()["error"]
        assert "got 2" in response.json()["error"]
    assert server.status()["counts"]["failed"] == 3
    # The worker goes on serving.
    assert server.predict({"input": 4}) == {"output": 8}


def test_a_client_that_leaves_while_queued_is_dropped_from_the_group(serve, events, tmp_path):
    server = serve(apis.BatchDoubler(events.path), max_batch_size=4, batch_timeout=0.05)
    go = tmp_path / "go"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        holder = pool.submit(requests.post, server.url + "/predict", json={"input": 0, "tag": "holder", "wait_for": str(go)}, timeout=10)
        events.wait_for("batch")  # the only worker is busy with the holder's batch
        staying = [pool.submit(requests.post, server.url + "/predict", json={"input": i, "tag": f"stay{i}"}, timeout=10) for i in (1, 2)]
        leaving = raw_post(server.url, json.dumps({"input": 9, "tag": "leaver"}).encode())
        wait_until(lambda: server.status()["counts"]["queued"] == 3, message="three requests queued")
        leaving.close()
        wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the leaver to be cancelled")
        go.touch()
        assert holder.result().json() == {"output": 0}
        assert sorted(r.result().json()["output"] for r in staying) == [2, 4]
    batches = events.named("batch")
    assert [sorted(b["tags"]) for b in batches] == [["holder"], ["stay1", "stay2"]]


def test_a_worker_dying_mid_batch_answers_500_to_each_request_and_is_replaced(serve, events):
    server = serve(apis.BatchDoubler(events.path), max_batch_size=2, batch_timeout=5.0)
    responses = _post_all(server, [{"input": 1}, {"input": 2, "exit": True}])
    for response in responses:
        assert response.status_code == 500
        assert "died while handling this request" in response.json()["error"]
    wait_until(lambda: server.status()["workers"][0]["restarts"] == 1 and server.status()["workers"][0]["state"] == "idle", message="the replacement worker")
    assert [r.json() for r in _post_all(server, [{"input": 3}, {"input": 4}])] == [{"output": 6}, {"output": 8}]


def test_default_batch_stacks_numpy_arrays_and_unbatch_splits_rows(serve):
    import numpy

    server = serve(apis.NumpyBatch(), max_batch_size=3, batch_timeout=5.0)
    responses = _post_all(server, [{"vector": [i, 1.0, 2.0]} for i in range(3)])
    answers = sorted((r.json() for r in responses), key=lambda a: a["row_sum"])
    assert [a["row_sum"] for a in answers] == [3.0, 4.0, 5.0]
    assert all(a["type"] == numpy.ndarray.__name__ and a["batch_shape"] == [3, 3] for a in answers)


def test_default_batch_and_unbatch_handle_lists():
    api = litkit.LitAPI()
    assert api.batch([{"a": 1}, 2, "x"]) == [{"a": 1}, 2, "x"]
    assert api.unbatch((1, 2, 3)) == [1, 2, 3]


def test_a_batched_stream_sends_each_client_its_own_share(serve, events):
    server = serve(apis.BatchTicker(events.path), max_batch_size=3, batch_timeout=5.0)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        streams = [pool.submit(lambda tag: list(server.stream({"n": 4, "tag": tag})), tag) for tag in "abc"]
        results = [s.result() for s in streams]
    for tag, chunks in zip("abc", results):
        assert chunks == [{"i": i, "tag": tag} for i in range(4)]
    assert [e["size"] for e in events.named("batch")] == [3]
    events.wait_for("finally")
    assert not events.named("generator_exit"), "a stream that ran to its end is not closed early"


def test_a_batched_stream_stops_per_client_and_closes_once_every_client_left(serve, events):
    server = serve(apis.BatchTicker(events.path), max_batch_size=2, batch_timeout=5.0)
    first = raw_post(server.url, json.dumps({"tag": "first", "interval": 0.002}).encode())
    second = raw_post(server.url, json.dumps({"tag": "second"}).encode())
    readers = [ChunkReader(first), ChunkReader(second)]
    assert [r.status for r in readers] == [200, 200]
    for reader in readers:
        assert json.loads(reader.line())["i"] == 0
    readers[0].close()
    first.close()
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the first client to be counted cancelled")
    # The second client keeps receiving; the shared generator is still running for it.
    seen = [json.loads(readers[1].line()) for _ in range(50)]
    assert all(chunk["tag"] == "second" for chunk in seen)
    assert not events.named("finally"), "the generator was closed while a client of the batch was still there"
    readers[1].close()
    second.close()
    hung_up = time.monotonic()
    finally_event = events.wait_for("finally")[0]
    assert events.named("generator_exit"), "GeneratorExit never reached the batched generator"
    assert finally_event["t"] - hung_up < 1.0
    wait_until(lambda: server.status()["counts"]["cancelled"] == 2, message="both clients counted cancelled")
    assert list(server.stream({"n": 2})) == [{"i": 0, "tag": None}, {"i": 1, "tag": None}]


def test_a_size_mismatch_in_a_batched_stream_is_a_500_that_says_so(serve, events):
    server = serve(apis.BatchTicker(events.path), max_batch_size=2, batch_timeout=0.01)
    response = requests.post(server.url + "/predict", json={"n": 3, "tag": "short"}, timeout=10)
    assert response.status_code == 500
    assert "expected 1 outputs" in response.json()["error"] and "got 0" in response.json()["error"]


def test_batch_raising_fails_every_request_of_the_group_and_the_worker_lives_on(serve):
    server = serve(apis.FailingBatch(), max_batch_size=2, batch_timeout=5.0)
    for response in _post_all(server, [{"n": 2}, {"n": 2}]):
        assert response.status_code == 500
        assert response.json()["error"] == "ValueError: cannot batch 2 inputs"
    assert server.status()["workers"][0]["restarts"] == 0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_batch_size": 0}, "max_batch_size must be an int from 1 to 253"),
        ({"max_batch_size": 254}, "max_batch_size must be an int from 1 to 253"),
        ({"max_batch_size": 4, "batch_timeout": -1}, "batch_timeout must be a number of seconds"),
        ({"batch_timeout": "fast"}, "batch_timeout must be a number of seconds"),
    ],
)
def test_serve_rejects_bad_batching_options(options, message):
    with pytest.raises(ValueError, match=message):
        litkit.serve(apis.BatchDoubler(), port=0, **options)
