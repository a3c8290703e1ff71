"""Faults the server survives: workers that crash or run away, the serving process killed, a stop
with work in flight, and user code that floods stdout and stderr."""

from __future__ import annotations

import json
import signal
import threading
import time

import psutil
import pytest
import requests

import apis
import litkit
from conftest import ChunkReader, assert_no_children, raw_post, wait_until
from helpers import litkit_command, running

CRASHES = ["exit", "segv", "sigkill"]


def _status_when(server, condition, message):
    return wait_until(lambda: (lambda s: condition(s) and s)(server.status()), message=message)


@pytest.mark.parametrize("how", CRASHES)
def test_a_crash_mid_request_is_a_500_within_1s_and_the_worker_is_replaced(serve, how):
    server = serve(apis.Crasher(), workers=2)
    pids = {w["pid"] for w in server.status()["workers"]}
    started = time.monotonic()
    response = requests.post(server.url + "/predict", json={"crash": how}, timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/json"
    assert "died while handling this request; it is being replaced" in response.json()["error"]
    assert elapsed < 1.0, f"the client waited {elapsed:.2f}s for the crash to be reported"
    status = _status_when(server, lambda s: all(w["state"] == "idle" for w in s["workers"]) and sum(w["restarts"] for w in s["workers"]) == 1, "a replacement worker")
    assert len({w["pid"] for w in status["workers"]} - pids) == 1
    assert status["counts"]["failed"] == 1
    assert status["health"] == {"ok": True, "reason": None}
    assert server.predict({"after": how})["echo"] == {"after": how}


@pytest.mark.parametrize("how", ["setup", "request"])
def test_a_forked_descendant_does_not_hide_a_worker_s_death_and_stop_ends_it(serve, events, how):
    """Regression (issue 14, bug 2): a descendant forked by ``setup()`` (a ``multiprocessing.Process``)
    or by a hook (``os.fork()``) kept copies of the worker's control socket and response pipe. When
    the worker died, the pool never saw end of file: the request hung, ``/health`` stayed 200, the
    dead pid showed busy with 0 restarts, it was never replaced, and the child outlived ``stop()``."""
    server = serve(apis.Forking(events.path, how), workers=1)
    pid = server.status()["workers"][0]["pid"]
    if how == "setup":
        events.wait_for("forked")
    started = time.monotonic()
    response = requests.post(server.url + "/predict", json={"crash": "sigkill"}, timeout=10)
    elapsed = time.monotonic() - started
    assert response.status_code == 500, response.text
    assert "died while handling this request" in response.json()["error"]
    assert elapsed < 1.0, f"the client waited {elapsed:.2f}s for the crash to be reported"
    forked = [psutil.Process(events.wait_for("forked")[0]["pid"])]
    try:
        status = _status_when(server, lambda s: s["workers"][0]["state"] == "idle" and s["workers"][0]["restarts"] == 1, "a replacement worker")
        assert status["workers"][0]["pid"] != pid
        assert server.predict({"after": "crash"})["echo"] == {"after": "crash"}
        assert requests.get(server.url + "/health", timeout=10).status_code == 200
        wait_until(lambda: not _alive(forked[:1]), 2.0, "the dead worker's descendant to end with it")
        if how == "setup":  # the replacement forked one too, and is alive: stop() ends both
            forked = [psutil.Process(event["pid"]) for event in events.wait_for("forked", 2)]
            assert _alive(forked[1:])
        server.stop()
        wait_until(lambda: not _alive(forked), 2.0, "stop() to end what the workers had forked")
    finally:
        for process in _alive(forked):
            process.kill()  # by its pid: the test made it (through its worker)


@pytest.mark.parametrize("how", CRASHES)
def test_a_crash_mid_stream_ends_it_with_an_error_line_within_1s(serve, how):
    server = serve(apis.StreamCrasher())
    sock = raw_post(server.url, json.dumps({"crash": how, "after": 3, "n": 10}).encode())
    reader = ChunkReader(sock)
    assert reader.status == 200
    assert [json.loads(reader.line()) for _ in range(3)] == [{"i": 0}, {"i": 1}, {"i": 2}]
    started = time.monotonic()
    last = json.loads(reader.line())
    assert time.monotonic() - started < 1.0
    assert "died while handling this request" in last["error"]
    assert last["request_id"] == reader.headers["x-request-id"]
    with pytest.raises(EOFError):
        reader.line()
    reader.close()
    sock.close()
    _status_when(server, lambda s: s["workers"][0]["restarts"] == 1 and s["workers"][0]["state"] == "idle", "a replacement worker")
    assert list(server.stream({"n": 2})) == [{"i": 0}, {"i": 1}]


def test_a_crash_leaves_the_other_requests_alone(serve, tmp_path):
    """Streams running on other workers go on to their end while one worker segfaults."""
    server = serve(apis.StreamCrasher(), workers=3)
    streams = [server.stream({"n": 40, "interval": 0.01}) for _ in range(2)]
    firsts = [next(stream) for stream in streams]
    crashed = requests.post(server.url + "/predict", json={"crash": "segv", "after": 0}, timeout=10)
    assert "died while handling this request" in crashed.text
    rests = [list(stream) for stream in streams]
    for first, rest in zip(firsts, rests):
        assert [first, *rest] == [{"i": i} for i in range(40)]
    counts = _status_when(server, lambda s: s["counts"]["completed"] == 2, "two completed streams")["counts"]
    assert counts["failed"] == 1 and counts["cancelled"] == 0


@pytest.mark.slow
def test_a_worker_that_keeps_failing_to_start_is_left_down_and_health_says_why(serve, tmp_path, events):
    """The documented schedule (README, docs/design.md): retried after 0.1, 0.5, 1, 2 and 4 s, left
    down after 5 failed starts. Pinned as documented, with the pool's real back-off (issue 14: the
    test patched the private constant and read its expectations from the module under test)."""
    corrupt = tmp_path / "corrupt"
    server = serve(apis.Crasher(fail_setup_if=str(corrupt), events=events.path))
    corrupt.touch()  # from now on every setup fails
    crashed = time.monotonic()
    assert requests.post(server.url + "/predict", json={"crash": "exit"}, timeout=10).status_code == 500
    status = wait_until(lambda: (lambda s: not s["health"]["ok"] and s)(server.status()), 30, "health to turn bad")
    reason = status["health"]["reason"]
    assert "worker 0 is down after 5 failed starts in a row" in reason
    assert "RuntimeError: the model file is corrupt" in reason
    assert status["workers"][0]["state"] == "dead"
    assert status["workers"][0]["restarts"] == 5  # then no more tries
    attempts = [event["t"] for event in events.named("setup")][1:]  # the first one served
    assert len(attempts) == 5, attempts
    assert attempts[0] - crashed >= 0.1
    for gap, backoff in zip(_gaps(attempts), (0.5, 1.0, 2.0, 4.0)):
        assert gap >= backoff, f"a retry came {gap:.2f}s after the one before, under the documented {backoff}s"
    health = requests.get(server.url + "/health", timeout=10)
    assert health.status_code == 503
    assert health.json() == {"status": "unavailable", "reason": reason}
    refused = requests.post(server.url + "/predict", json={}, timeout=10)
    assert refused.status_code == 503 and "model file is corrupt" in refused.json()["error"]
    assert len(events.named("setup")) == 6 and server.status()["workers"][0]["restarts"] == 5


def _gaps(values: list[float]) -> list[float]:
    return [b - a for a, b in zip(values, values[1:])]


@pytest.mark.slow
def test_requests_queued_when_the_last_worker_gives_up_get_503(serve, tmp_path, events):
    """With the pool's real back-off (about 7.6 s of retries, issue 14: not a patched constant)."""
    corrupt = tmp_path / "corrupt"
    server = serve(apis.Crasher(fail_setup_if=str(corrupt)))
    corrupt.touch()
    crashing = raw_post(server.url, json.dumps({"crash": "exit"}).encode())
    waiting = raw_post(server.url, b'{"x": 1}')  # queued behind the crash, then no worker is left
    waiting.settimeout(30)  # it waits through the five retries
    for sock, status in ((crashing, 500), (waiting, 503)):
        reader = ChunkReader(sock)
        assert reader.status == status
        reader.close()
        sock.close()
    counts = server.status()["counts"]
    assert counts["failed"] == 2 and counts["queued"] == 0


def test_a_cancelled_request_whose_worker_does_not_stop_gets_it_killed_after_cancel_grace(serve, events):
    server = serve(apis.Runaway(events.path), cancel_grace=0.5)
    old_pid = server.status()["workers"][0]["pid"]
    sock = raw_post(server.url, json.dumps({"tag": "stuck", "seconds": 30}).encode())
    events.wait_for("started")
    sock.close()  # the client leaves; predict never checks litkit.cancelled()
    hung_up = time.monotonic()
    status = _status_when(server, lambda s: s["workers"][0]["killed"] == 1, "the runaway worker to be killed")
    assert 0.5 <= time.monotonic() - hung_up < 3.0
    assert status["counts"]["cancelled"] == 1
    status = _status_when(server, lambda s: s["workers"][0]["state"] == "idle" and s["workers"][0]["pid"] != old_pid, "a replacement worker")
    assert status["workers"][0]["restarts"] == 1
    assert server.predict({"tag": "next"})["done"] == "next"
    assert status["counts"]["failed"] == 0  # the kill is not blamed on another request


def test_a_timed_out_request_is_killed_too_and_one_that_stops_in_time_is_not(serve, events):
    server = serve(apis.Runaway(events.path), timeout=0.3, cancel_grace=0.5)
    response = requests.post(server.url + "/predict", json={"tag": "slow", "seconds": 30}, timeout=10)
    assert response.status_code == 504
    _status_when(server, lambda s: s["workers"][0]["killed"] == 1 and s["workers"][0]["state"] == "idle", "the timed-out worker to be replaced")
    # A request that overruns the timeout but ends within the grace keeps its worker.
    pid = server.status()["workers"][0]["pid"]
    assert requests.post(server.url + "/predict", json={"tag": "late", "seconds": 0.4}, timeout=10).status_code == 504
    _status_when(server, lambda s: s["workers"][0]["handled"] == 1, "the late request to finish")
    time.sleep(0.5)  # past the grace: nothing is killed
    worker = server.status()["workers"][0]
    assert (worker["pid"], worker["killed"]) == (pid, 1)


def test_cancel_grace_is_validated():
    with pytest.raises(ValueError, match="cancel_grace must be a positive number of seconds"):
        litkit.serve(apis.Echo(), port=0, cancel_grace=0)


def test_kill_9_of_the_serving_process_leaves_no_worker_after_2s(tmp_path):
    """The litkit command, two workers (one busy in a hook that never checks cancelled(), one
    replaced after a crash, so started by the server later): kill -9 the server; every worker is
    gone within 2 s."""
    app = tmp_path / "app.py"
    app.write_text(
        "import os, time, litkit\n"
        "class Api(litkit.LitAPI):\n"
        "    def predict(self, x):\n"
        "        if x.get('crash'):\n"
        "            os._exit(1)\n"
        "        if x.get('started'):\n"
        "            open(x['started'], 'w').close()\n"
        "        time.sleep(x.get('sleep', 0))\n"
        "        return {'pid': os.getpid()}\n"
    )
    with running([*litkit_command(), "serve", f"{app}:Api", "--port", "0", "--workers", "2"]) as server:
        url = server.wait_for_banner().rsplit("/", 1)[0]
        first = {p.pid for p in server.record_children()}
        assert requests.post(url + "/predict", json={"crash": True}, timeout=10).status_code == 500
        wait_until(lambda: {p.pid for p in server.record_children()} - first, message="the replacement worker")
        wait_until(lambda: requests.post(url + "/predict", json={}, timeout=10).status_code == 200, message="a ready pool")
        started = tmp_path / "started"
        busy = raw_post(url, json.dumps({"sleep": 60, "started": str(started)}).encode())
        assert len(first) == 2 and len(server.seen) == 3  # the crashed worker, its replacement, the other one
        wait_until(started.exists, message="the busy request to reach its worker's sleep")
        server.proc.send_signal(signal.SIGKILL)
        server.wait_for_exit(10, "of SIGKILL")
        wait_until(lambda: not _alive(server.seen.values()), deadline_s=5, message="the orphaned workers to exit")
        assert time.monotonic() - server.exited_at < 2.0, f"workers outlived the server by {time.monotonic() - server.exited_at:.2f}s"
        busy.close()


def test_kill_9_of_the_serving_process_ends_a_worker_stuck_in_c_holding_the_gil(tmp_path):
    """Regression (issue 14, bug 3): a hook inside C with the GIL held (a catastrophic regex, tens of
    seconds) kept the watcher thread from running; the worker outlived a kill -9 of the serving
    process by 11.5 s where the README promises 2 s. The kernel's PR_SET_PDEATHSIG ends it now."""
    app = tmp_path / "app.py"
    started = tmp_path / "started"
    app.write_text(
        "import re, litkit\n"
        "class Api(litkit.LitAPI):\n"
        "    def predict(self, x):\n"
        f"        open({str(started)!r}, 'w').close()\n"
        "        return {'match': bool(re.match(r'(a+)+$', 'a' * 30 + 'b'))}  # about a minute in C, GIL held\n"
    )
    with running([*litkit_command(), "serve", f"{app}:Api", "--port", "0"]) as server:
        url = server.wait_for_banner().rsplit("/", 1)[0]
        workers = server.record_children()
        busy = raw_post(url, b"{}")
        try:
            wait_until(started.exists, message="the hook to be inside the regex")
            server.proc.send_signal(signal.SIGKILL)
            server.wait_for_exit(10, "of SIGKILL")
            wait_until(lambda: not _alive(workers), deadline_s=5, message="the stuck worker to exit")
            assert time.monotonic() - server.exited_at < 2.0, f"the worker outlived the server by {time.monotonic() - server.exited_at:.2f}s"
        finally:
            busy.close()
            for process in _alive(workers):
                process.kill()  # by its pid, started by this test's server


def _alive(processes) -> list:
    """Processes still running; an orphan's zombie (exited, not yet reaped by init) counts as gone."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_stop_with_drain_lets_requests_finish_refuses_new_ones_then_cancels_the_rest(events, tmp_path):
    server = litkit.serve(apis.Ticker(events.path), port=0, workers=2)
    short = raw_post(server.url, json.dumps({"tag": "short", "n": 30, "interval": 0.02}).encode())  # ~0.6 s
    long = raw_post(server.url, json.dumps({"tag": "long", "n": 100_000, "interval": 0.02}).encode())
    events.wait_for("request", 2)
    stopper = threading.Thread(target=server.stop, kwargs={"drain": 1.5})
    started = time.monotonic()
    stopper.start()
    wait_until(lambda: server.status()["health"]["ok"] is False, message="the drain to begin")
    refused = requests.post(server.url + "/predict", json={"n": 1}, timeout=10)
    assert refused.status_code == 503 and "takes no new requests" in refused.json()["error"]
    assert requests.get(server.url + "/health", timeout=10).json() == {"status": "unavailable", "reason": "the server is stopping"}
    short_reader, long_reader = ChunkReader(short), ChunkReader(long)
    assert [json.loads(short_reader.line())["i"] for _ in range(30)] == list(range(30))
    with pytest.raises(EOFError):
        short_reader.line()  # completed, not cut
    lines = []
    while True:
        try:
            lines.append(json.loads(long_reader.line()))
        except EOFError:
            break
    stopper.join(15)
    assert not stopper.is_alive()
    assert 1.5 <= time.monotonic() - started < 6
    assert lines[-1]["error"] == "the server stopped before this request finished"
    counts = server.status()["counts"]
    assert counts["completed"] == 1 and counts["cancelled"] == 1 and counts["failed"] == 0
    assert len(events.named("finally")) == 2  # the long generator was closed too
    for reader, sock in ((short_reader, short), (long_reader, long)):
        reader.close()
        sock.close()
    assert_no_children()


def test_stop_with_drain_returns_as_soon_as_nothing_is_in_flight():
    server = litkit.serve(apis.Echo(), port=0)
    started = time.monotonic()
    server.stop(drain=30)
    assert time.monotonic() - started < 5
    with pytest.raises(ValueError, match="drain must be a number of seconds >= 0"):
        server.stop(drain=-1)


def test_noisy_user_code_cannot_corrupt_the_channel(serve):
    """Prints, stderr floods and raw binary (fake frame headers included) written to fds 1 and 2
    while serving: every response stays exact."""
    server = serve(apis.Noisy(), workers=2)
    results: list[list] = []

    def client(tag: int) -> None:
        results.append(list(server.stream({"n": 20, "tag": tag})))

    threads = [threading.Thread(target=client, args=(tag,)) for tag in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results, key=lambda r: r[0]["tag"]) == [[{"i": i, "tag": tag} for i in range(20)] for tag in range(6)]
    status = server.status()
    assert status["counts"]["completed"] == 6 and status["counts"]["failed"] == 0
    assert all(w["restarts"] == 0 for w in status["workers"])
