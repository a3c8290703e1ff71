"""Work stops when the client leaves: the reason litkit exists."""

from __future__ import annotations

import json
import time

import pytest
import requests

import apis
from conftest import ChunkReader, assert_nothing_at_error, hang_up_mid_stream, raw_post, wait_until


@pytest.mark.parametrize("sse", [False, True], ids=["ndjson", "sse"])
def test_disconnect_mid_stream_closes_the_generator_at_its_next_chunk(serve, events, tmp_path, sse):
    """The client leaves after 10 chunks; the generator's next chunk, made once the server has seen
    the hang-up, is its last: its write fails, GeneratorExit reaches it and its ``finally`` runs.
    (With a chunk every 1 ms, the benchmark's floors: at most one chunk after the hang-up,
    ``finally`` within 50 ms; ``benchmarks/run.py``, docs/benchmarks.md.)"""
    server = serve(apis.Ticker(events.path))
    headers = {"Accept": "text/event-stream"} if sse else None
    hung_up = hang_up_mid_stream(server, events, str(tmp_path / "gate-"), 10, headers)
    produced_after = [e["i"] for e in events.named("yield") if e["t"] > hung_up]
    assert produced_after == [10], f"the generator made {produced_after} after the hang-up"
    assert events.named("generator_exit"), "GeneratorExit never reached the user's generator"
    record = server.status()["recent"][0]
    assert record["state"] == "cancelled"
    assert record["error"].startswith("client left after ")
    # The freed worker serves the next request.
    assert list(server.stream({"n": 3, "interval": 0})) == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_closing_the_client_iterator_cancels_the_stream(serve, events):
    server = serve(apis.Ticker(events.path))
    stream = server.stream({"interval": 0.005})
    assert [next(stream) for _ in range(3)] == [{"i": 0}, {"i": 1}, {"i": 2}]
    stream.close()
    events.wait_for("finally")
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="cancelled count 1")
    wait_until(lambda: server.status()["workers"][0]["state"] == "idle", message="the worker to be idle again")


def test_queued_request_whose_client_left_never_runs(serve, events, tmp_path):
    server = serve(apis.Echo(events.path), workers=1)
    release = tmp_path / "release"
    busy = raw_post(server.url, json.dumps({"tag": "A", "wait_for": str(release)}).encode())
    events.wait_for("request")  # A holds the only worker
    abandoned = raw_post(server.url, json.dumps({"tag": "B"}).encode())
    wait_until(lambda: server.status()["counts"]["queued"] == 1, message="B to be queued")
    abandoned.close()
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="B to be counted cancelled")
    release.touch()
    reader = ChunkReader(busy)
    assert reader.status == 200
    reader.close()
    busy.close()
    assert server.predict({"tag": "C"}) == {"echo": {"tag": "C"}}
    assert [e["tag"] for e in events.named("request")] == ["A", "C"], "the abandoned request reached a worker"
    counts = server.status()["counts"]
    assert (counts["completed"], counts["cancelled"], counts["queued"]) == (2, 1, 0)


def test_non_streaming_disconnect_turns_cancelled_true_and_discards_the_result(serve, events, caplog):
    """Also the promise the half-close probe must keep (litkit.server.halfclose): a FIN from a
    client that closed (no reset) still cancels the work, one round trip later."""
    server = serve(apis.SlowUntilCancelled(events.path))
    sock = raw_post(server.url, b"{}")
    events.wait_for("started")
    sock.close()
    # predict loops until litkit.cancelled() turns True: the event says it did, before the loop's own end.
    events.wait_for("saw_cancelled")
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="cancelled count 1")
    assert server.status()["counts"]["completed"] == 0
    assert server.status()["recent"][0]["error"] == "client left after 0 chunks"
    assert_nothing_at_error(caplog)
    wait_until(lambda: server.status()["workers"][0]["state"] == "idle", message="the worker to be idle again")


def test_timeout_answers_504_and_closes_the_generator(serve, events):
    server = serve(apis.Ticker(events.path), timeout=0.2)
    started = time.monotonic()
    # 3 s of work before the first chunk, never checking litkit.cancelled(); the 504 comes at 0.2 s,
    # not before, and does not wait for the work.
    response = requests.post(server.url + "/predict", json={"sleep_steps": 300, "interval": 0.001}, timeout=10)
    answered_s = time.monotonic() - started
    assert response.status_code == 504
    assert answered_s >= 0.2
    assert not events.named("finally"), f"the 504 waited for the work ({answered_s:.2f} s)"
    assert "timeout=0.2s" in response.json()["error"]
    events.wait_for("finally")
    assert len(events.named("yield")) <= 1  # the first chunk's write found the pipe closed
    wait_until(lambda: server.status()["counts"]["timed_out"] == 1, message="timed_out count 1")
    # Once the first byte went out, the timeout no longer applies: a long stream completes.
    chunks = list(server.stream({"n": 40, "interval": 0.01}))
    assert len(chunks) == 40


def test_timeout_of_a_queued_request_answers_504_and_it_never_runs(serve, events, tmp_path):
    server = serve(apis.Echo(events.path), workers=1, timeout=0.3)
    release = tmp_path / "release"
    busy = raw_post(server.url, json.dumps({"tag": "A", "wait_for": str(release)}).encode())
    events.wait_for("request")
    response = requests.post(server.url + "/predict", json={"tag": "B"}, timeout=10)
    assert response.status_code == 504
    release.touch()
    busy.close()
    wait_until(lambda: server.status()["workers"][0]["state"] == "idle", message="the worker to be idle again")
    assert server.predict({"tag": "C"}) == {"echo": {"tag": "C"}}
    assert [e["tag"] for e in events.named("request")] == ["A", "C"]


def test_cancelled_is_false_outside_a_request():
    import litkit

    assert litkit.cancelled() is False


@pytest.mark.parametrize("api", [apis.ThreadedGenerate, apis.AsyncThreadedGenerate], ids=["sync", "async"])
def test_a_thread_the_hook_runs_the_model_on_sees_cancelled_and_stops(serve, events, api):
    """model.generate on a thread of its own, with a StoppingCriteria reading litkit.cancelled()
    (examples/chat.py --generate, docs/serving.md): after a hang-up the thread makes at most one
    more token than predict had when it noticed, instead of running to its 500."""
    server = serve(api(events.path), stream=True)
    sock = raw_post(server.url, b"{}")
    reader = ChunkReader(sock)
    assert reader.status == 200
    read = [json.loads(reader.line())["token"] for _ in range(5)]
    assert read == [1, 2, 3, 4, 5]
    reader.close()
    sock.close()
    made = events.wait_for("thread_stopped")[0]["made"]
    # 5 read, a few more in the pipe and the socket's buffers when the client left, and the one
    # token the thread made before the server closed the request's pipe.
    assert made < 50, made
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="cancelled count 1")


def test_timeout_turns_cancelled_true_in_a_non_streaming_hook(serve, events):
    server = serve(apis.SlowUntilCancelled(events.path), timeout=0.2)
    response = requests.post(server.url + "/predict", json={}, timeout=10)
    assert response.status_code == 504
    started = events.wait_for("started")[0]
    saw = events.wait_for("saw_cancelled")[0]  # before the hook's own 10-s loop ended
    assert saw["t"] - started["t"] > 0.15, "cancelled() turned True before the timeout"
    wait_until(lambda: server.status()["counts"]["timed_out"] == 1, message="timed_out count 1")


def test_server_cancel_ends_a_running_stream_like_a_disconnect(serve, events):
    """Server.cancel (the dashboard's Cancel button) closes the generator and ends the client's stream."""
    server = serve(apis.Ticker(events.path))
    sock = raw_post(server.url, json.dumps({"interval": 0.005}).encode(), {"X-Request-ID": "to-cancel"})
    reader = ChunkReader(sock)
    assert reader.status == 200
    for _ in range(3):
        reader.line()
    assert server.cancel("to-cancel", "cancelled from the dashboard") is True
    finally_event = events.wait_for("finally")[0]
    assert events.named("generator_exit"), "GeneratorExit never reached the user's generator"
    lines = []
    try:
        while True:
            lines.append(reader.line())
    except EOFError:
        pass  # the chunked body ended: the client's stream is over
    finally:
        reader.close()
        sock.close()
    last = json.loads(lines[-1])
    assert last == {"error": "request to-cancel was cancelled from the dashboard", "request_id": "to-cancel"}
    assert len([e for e in events.named("yield") if e["t"] > finally_event["t"]]) == 0
    record = server.status()["recent"][0]
    assert record["state"] == "cancelled"
    assert record["error"] == f"cancelled from the dashboard after {record['chunks']} chunks"
    assert server.status()["counts"]["cancelled"] == 1
    assert server.cancel("to-cancel") is False  # already over


def test_server_cancel_drops_a_queued_request(serve, events, tmp_path):
    server = serve(apis.Echo(events.path))
    gate = tmp_path / "go"
    busy = raw_post(server.url, json.dumps({"wait_for": str(gate)}).encode())
    try:
        wait_until(lambda: server.status()["counts"]["running"] == 1, message="the first request to hold the worker")
        waiting = raw_post(server.url, json.dumps({"tag": "queued"}).encode(), {"X-Request-ID": "in-queue"})
        try:
            wait_until(lambda: server.status()["counts"]["queued"] == 1, message="one queued request")
            assert server.cancel("in-queue") is True
            assert ChunkReader(waiting).status == 503
        finally:
            waiting.close()
        gate.touch()
        assert ChunkReader(busy).status == 200
    finally:
        busy.close()
    # The worker runs requests in order: had the cancelled one been handed to it, it would be
    # decoded before this one is (asserting right after the first completed could run too early).
    assert server.predict({"tag": "after"}) == {"echo": {"tag": "after"}}
    assert [e["tag"] for e in events.named("request")] == ["after"], "the cancelled request reached a worker"
    record = next(r for r in server.status()["recent"] if r["id"] == "in-queue")
    assert (record["state"], record["error"]) == ("cancelled", "cancelled by Server.cancel()")


def test_server_cancel_rejects_a_non_string_id(serve):
    server = serve(apis.Echo())
    with pytest.raises(TypeError, match="request_id must be a str"):
        server.cancel(3)
