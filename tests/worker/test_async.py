"""Async hooks: ``async def predict`` and async generators on an event loop in the worker, up to
``max_concurrency`` requests at once, cancelled like sync ones when the client leaves."""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
import os
import stat
import struct
import termios

import pytest
import requests

import apis
import litkit
from conftest import ChunkReader, assert_no_children, hang_up_mid_stream, raw_post, serving_pid, wait_until


def _post_all(server, payloads, timeout=10.0):
    with concurrent.futures.ThreadPoolExecutor(len(payloads)) as pool:
        futures = [pool.submit(requests.post, server.url + "/predict", json=p, timeout=timeout) for p in payloads]
        return [f.result() for f in futures]


def test_one_worker_runs_max_concurrency_async_requests_at_once(serve, events):
    server = serve(apis.AsyncSleeper(events.path), max_concurrency=4)
    responses = _post_all(server, [{"tag": i, "delay": 0.5} for i in range(4)])
    answers = [r.json() for r in responses]
    assert [a["tag"] for a in answers] == [0, 1, 2, 3]
    assert len({a["pid"] for a in answers}) == 1
    started = [e["t"] for e in events.named("started")]
    first_done = min(e["t"] for e in events.named("finally"))
    assert len(started) == 4 and max(started) < first_done, "the four requests did not overlap in the worker"
    assert server.status()["counts"]["completed"] == 4


def test_a_worker_never_runs_more_than_max_concurrency_requests(serve, events):
    server = serve(apis.AsyncSleeper(events.path), max_concurrency=2)
    _post_all(server, [{"tag": i, "delay": 0.3} for i in range(3)])
    started = sorted(e["t"] for e in events.named("started"))
    done = sorted(e["t"] for e in events.named("finally"))
    assert started[2] >= done[0], "a third request started while two were still running"
    wait_until(lambda: server.status()["workers"][0]["state"] == "idle", message="the worker to be idle again")


def test_an_async_generator_streams_ndjson_and_sse(serve):
    server = serve(apis.AsyncTicker(), max_concurrency=2)
    assert list(server.stream({"n": 3})) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert list(server.stream({"n": 2}, sse=True)) == [{"i": 0}, {"i": 1}]


def test_a_client_leaving_cancels_its_awaiting_predict_only(serve, events):
    server = serve(apis.AsyncSleeper(events.path), max_concurrency=2)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        other = pool.submit(requests.post, server.url + "/predict", json={"tag": "other", "delay": 0.5}, timeout=10)
        leaving = raw_post(server.url, json.dumps({"tag": "leaver", "delay": 30}).encode())
        wait_until(lambda: len(events.named("started")) == 2, message="both requests to start")
        leaving.close()
        (cancelled,) = events.wait_for("cancelled_error")  # long before the leaver's 30 s
        assert cancelled["tag"] == "leaver"
        assert other.result().json()["tag"] == "other"
    assert {e["tag"] for e in events.named("finally")} == {"leaver", "other"}
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the leaver to be counted cancelled")


def test_a_client_leaving_an_async_stream_closes_the_generator(serve, events, tmp_path):
    """As for sync generators: once the server has seen the hang-up, the generator makes at most
    one more chunk (none if the worker cancels it while it awaits) and its ``finally`` runs.
    (Chunks every 1 ms: the benchmark's floors, ``benchmarks/run.py``.)"""
    server = serve(apis.AsyncTicker(events.path), max_concurrency=2)
    hung_up = hang_up_mid_stream(server, events, str(tmp_path / "gate-"), 10)
    after = [e["i"] for e in events.named("yield") if e["t"] > hung_up]
    assert after in ([], [10]), f"the generator made {after} after the hang-up"
    # Awaiting when the pipe closed: CancelledError; suspended at its yield: GeneratorExit (aclose).
    assert events.named("cancelled_error") or events.named("generator_exit")
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the stream to be counted cancelled")
    assert list(server.stream({"n": 1})) == [{"i": 0}]


def test_a_failed_write_reaches_the_async_generator_as_generator_exit(serve, events):
    """With no await between yields the generator is at its yield when a write fails: aclose() it."""
    server = serve(apis.AsyncTicker(events.path), max_concurrency=1)
    sock = raw_post(server.url, json.dumps({"interval": None}).encode())
    reader = ChunkReader(sock)
    reader.line()
    reader.close()
    sock.close()
    events.wait_for("finally")
    assert events.named("generator_exit") and not events.named("cancelled_error")


def _a_response_pipe_is_full(pid: int) -> bool:
    """Whether a pipe read end of process ``pid`` (the serving one: the server's end of a response
    pipe) holds as many bytes as the pipe can: its worker's next write waits."""
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            fd = os.open(f"/proc/{pid}/fd/{name}", os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue  # closed meanwhile, or not a file this process may open
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                continue
            held = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
            if held and held >= fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ):
                return True
        except OSError:
            continue  # the write end
        finally:
            os.close(fd)
    return False


def test_a_client_that_reads_slowly_holds_up_only_its_own_request(serve, events):
    """Regression: blocking pipe writes stalled the worker's loop, and every other request with it."""
    server = serve(apis.AsyncTicker(events.path), max_concurrency=2)
    slow = raw_post(server.url, json.dumps({"tag": "slow", "interval": 0, "pad": 65536}).encode())  # never read

    try:
        wait_until(lambda: _a_response_pipe_is_full(serving_pid(server)), message="the slow stream to fill its pipe and wait")
        assert list(server.stream({"n": 3, "tag": "other"}, timeout=5)) == [{"i": 0}, {"i": 1}, {"i": 2}]
    finally:
        slow.close()
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the slow stream to be cancelled")


def test_a_timeout_cancels_an_async_predict(serve, events):
    server = serve(apis.AsyncSleeper(events.path), max_concurrency=2, timeout=0.3)
    response = requests.post(server.url + "/predict", json={"tag": "slow", "delay": 30}, timeout=10)
    assert response.status_code == 504
    events.wait_for("cancelled_error")
    assert server.predict({"tag": "next"})["tag"] == "next"


def test_async_hooks_answer_errors_like_sync_ones(serve):
    server = serve(apis.AsyncSleeper(), max_concurrency=2)
    response = requests.post(server.url + "/predict", json={"raise": True}, timeout=10)
    assert response.status_code == 418
    assert response.json()["error"] == "async hooks raise HTTPError too"
    assert requests.post(server.url + "/predict", data=b"{", timeout=10).status_code == 400


def test_an_async_worker_stops_cleanly_with_requests_in_flight(events):
    server = litkit.serve(apis.AsyncSleeper(events.path), port=0, max_concurrency=3)
    try:
        sockets = [raw_post(server.url, json.dumps({"tag": i, "delay": 30}).encode()) for i in range(3)]
        events.wait_for("started", 3)
    finally:
        server.stop()
    assert len(events.wait_for("finally", 3)) == 3
    for sock in sockets:
        sock.close()
    assert_no_children()


def test_max_concurrency_needs_an_async_predict():
    with pytest.raises(ValueError, match=r"max_concurrency=4 needs an async predict, but Doubler.predict is a plain function"):
        litkit.serve(apis.Doubler(), port=0, max_concurrency=4)
    with pytest.raises(ValueError, match="max_batch_size=4 is not supported with an async predict"):
        litkit.serve(apis.AsyncSleeper(), port=0, max_batch_size=4)


def test_two_requests_with_the_same_x_request_id_are_told_apart_by_the_server(serve, events):
    """Regression (issue 14, bug 4): with max_concurrency above 1, the DONE of one request was
    matched by the client's X-Request-ID, so a second request with the same id disarmed the
    runaway kill of the first (``killed`` stayed 0 and the worker stayed busy)."""
    server = serve(apis.AsyncStubborn(events.path), max_concurrency=2, cancel_grace=1.5)
    same = {"X-Request-ID": "same-id"}
    stubborn = raw_post(server.url, json.dumps({"tag": "stubborn", "stubborn": True}).encode(), same)
    events.wait_for("started")
    quick = raw_post(server.url, json.dumps({"tag": "quick", "delay": 0.5}).encode(), same)
    events.wait_for("started", 2)
    stubborn.close()  # cancelled; the quick one ends within the stubborn one's cancel_grace
    events.wait_for("ignored the cancel")
    reader = ChunkReader(quick)
    assert reader.status == 200 and json.loads(reader.body()) == {"tag": "quick"}
    assert reader.headers["x-request-id"] == "same-id"  # the client's id is echoed
    reader.close()
    quick.close()
    worker = wait_until(lambda: (lambda w: w["killed"] == 1 and w)(server.status()["workers"][0]), message="the stubborn request's worker to be killed")
    assert worker["restarts"] <= 1
    wait_until(lambda: server.status()["workers"][0]["state"] == "idle", message="a replacement worker")
    assert server.predict({"tag": "after"}) == {"tag": "after"}


def test_an_async_predict_with_the_default_max_concurrency_runs_one_request_at_a_time(serve, events):
    """Regression (issue 14, bug 5): with ``max_concurrency=1`` the pool sent a busy async worker one
    request ahead, as it does for sync workers, and the worker's event loop started it at once: two
    ran together (six 1 s requests took 3 s). The README says one at a time."""
    server = serve(apis.AsyncSleeper(events.path))
    responses = _post_all(server, [{"tag": i, "delay": 0.2} for i in range(4)])
    assert [r.status_code for r in responses] == [200] * 4
    spans = sorted(zip(sorted(e["t"] for e in events.named("started")), sorted(e["t"] for e in events.named("finally"))))
    assert len(spans) == 4
    for (_, done), (next_start, _) in zip(spans, spans[1:]):
        assert next_start >= done, f"a request started {done - next_start:.3f}s before the one before it ended"
