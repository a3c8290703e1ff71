"""The server's life: serve() returns ready, re-serving a port, a port held elsewhere, stop()."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import psutil
import pytest
import requests

import apis
import litkit
from conftest import ChunkReader, assert_no_children, litkit_threads, raw_post, wait_until


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_serve_returns_with_the_endpoint_up_and_a_blocking_call_works():
    with litkit.serve(apis.Doubler(), port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert server.state == "serving"
        body = json.dumps({"input": 4}).encode()
        request = __import__("urllib.request").request.Request(server.url + "/predict", data=body, headers={"Content-Type": "application/json"})
        with __import__("urllib.request").request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read()) == {"output": 8}
        assert "serving" in repr(server) and "/predict" in repr(server)
    assert server.state == "stopped"
    assert "stopped" in repr(server)


def test_stop_leaves_no_thread_process_fd_or_listener_behind():
    baseline_fds = _open_fds()
    server = litkit.serve(apis.Ticker(), port=0, workers=2)
    port = server.port
    stream = server.stream({"interval": 0.01})
    next(stream)
    stream.close()
    server.stop()
    server.stop()  # idempotent
    assert server.state == "stopped"
    assert not litkit_threads()
    assert_no_children()
    leaked = _open_fds() - baseline_fds
    wait_until(lambda: not (_open_fds() - baseline_fds), deadline_s=5, message=f"fds {leaked} to close")
    with socket.socket() as again:  # the port can be bound again
        again.bind(("127.0.0.1", port))
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=5)


def test_stop_ends_requests_in_flight(events, tmp_path):
    server = litkit.serve(apis.Ticker(events.path), port=0)
    sock = raw_post(server.url, json.dumps({"interval": 0.01}).encode())
    reader = ChunkReader(sock)
    reader.line()
    server.stop()
    lines = []
    try:
        while True:
            lines.append(reader.line())
    except (EOFError, ValueError, OSError):
        pass
    reader.close()
    sock.close()
    assert json.loads(lines[-1])["error"] == "the server stopped before this request finished"
    events.wait_for("finally")
    assert server.status()["counts"]["cancelled"] == 1
    assert_no_children()


def test_serving_the_same_port_again_replaces_the_old_server():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    first = litkit.serve(apis.Doubler(), port=port)
    try:
        second = litkit.serve(apis.Echo(), port=port)
        try:
            assert first.state == "replaced"
            assert second.url == first.url
            assert second.predict({"x": 1}) == {"echo": {"x": 1}}
        finally:
            second.stop()
    finally:
        first.stop()
    assert first.state == "replaced"
    assert_no_children()


def test_a_port_held_by_another_process_is_a_clear_error(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(holder.stdout.readline())
        with pytest.raises(litkit.PortInUseError) as raised:
            litkit.serve(apis.Doubler(), port=port)
        message = str(raised.value)
        assert f"port {port}" in message and "port=0" in message
        assert isinstance(raised.value, OSError)
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
    assert not litkit_threads()


def test_status_works_after_stop_and_keeps_the_final_figures():
    server = litkit.serve(apis.Doubler(), port=0)
    server.predict({"input": 1})
    server.stop()
    status = server.status()
    assert status["state"] == "stopped"
    assert status["counts"]["completed"] == 1
    assert [w["state"] for w in status["workers"]] == ["stopped"]  # regression (issue 14): it read "dead"


def test_predict_and_stream_say_which_call_fits_and_that_a_stopped_server_is_stopped(serve):
    """Regression (issue 14, a new user's rough edges): ``predict()`` on a streaming endpoint raised a
    bare JSONDecodeError, ``stream()`` on a JSON endpoint yielded one item, and ``predict()`` after
    ``stop()`` raised a bare ConnectionRefusedError."""
    streaming = serve(apis.TextChunks())
    with pytest.raises(ValueError, match=r"the endpoint at /predict streams its answer; call server.stream\(...\) instead"):
        streaming.predict({"chunks": ["a"]})
    with pytest.raises(ValueError, match=r"streams its answer \(application/x-ndjson\); call stream\(\) instead of predict\(\)"):
        litkit.Client(streaming.url).predict({"chunks": ["a"]})
    plain = serve(apis.Doubler())
    with pytest.raises(ValueError, match=r"the endpoint at /predict answers with one JSON body; call server.predict\(...\) instead"):
        plain.stream({"input": 1})
    with pytest.raises(ValueError, match=r"answers with one JSON body, not a stream; call predict\(\) instead of stream\(\)"):
        litkit.Client(plain.url).stream({"input": 1})
    plain.stop()
    with pytest.raises(litkit.ServerStoppedError, match=r"was stopped; call litkit.serve\(...\) again"):
        plain.predict({"input": 1})


def test_serve_validates_its_arguments():
    for options, message in [
        ({"port": -1}, "port must be an int from 0 to 65535"),
        ({"timeout": 0}, "timeout must be a positive number"),
        ({"api_path": "predict"}, "api_path must be a path starting with '/'"),
        ({"max_queue": 0}, "max_queue must be an int from 1"),
        ({"host": ""}, "host must be an address"),
    ]:
        with pytest.raises(ValueError, match=message):
            litkit.serve(apis.Doubler(), **options)
    assert not litkit_threads()


class Misspelled(litkit.LitAPI):
    def predcit(self, x):
        return x


class NoPredict(litkit.LitAPI):
    def setup(self, device):
        self.ready = True


def test_an_api_without_predict_is_refused_at_serve_naming_the_method():
    """Regression (issue 14, a new user's rough edge): a LitAPI with a misspelled or missing
    ``predict`` started, then failed every request."""
    with pytest.raises(TypeError, match=r"Misspelled does not define predict\(self, x\), the hook every request calls; Misspelled has 'predcit': did you mean predict\?"):
        litkit.serve(Misspelled(), port=0)
    with pytest.raises(TypeError, match=r"NoPredict does not define predict\(self, x\), the hook every request calls$"):
        litkit.serve(NoPredict(), port=0)
    assert not litkit_threads()
    assert_no_children()


def test_serve_is_quick_to_return():
    started = time.monotonic()
    with litkit.serve(apis.Doubler(), port=0):
        elapsed = time.monotonic() - started
    assert elapsed < 5  # generous on a loaded 2-core machine; benchmarks measure it properly


def test_a_queue_full_refusal_counts_failed_and_404_405_413_are_not_counted(serve, events, tmp_path):
    """README: a request refused because the queue is full is counted ``failed``; a 404, 405 or 413
    is answered before a request is admitted, so it is not counted."""
    server = serve(apis.Echo(events.path), workers=1, max_queue=1, max_body_size=100)
    release = tmp_path / "release"
    busy = raw_post(server.url, json.dumps({"tag": "A", "wait_for": str(release)}).encode())
    try:
        events.wait_for("request")
        queued = raw_post(server.url, json.dumps({"tag": "B"}).encode())
        try:
            wait_until(lambda: server.status()["counts"]["queued"] == 1, message="B to be queued")
            refused = requests.post(server.url + "/predict", json={"tag": "C"}, timeout=10)
            assert refused.status_code == 503 and "max_queue=1" in refused.json()["error"]
            assert requests.post(server.url + "/nowhere", json={}, timeout=10).status_code == 404
            assert requests.get(server.url + "/predict", timeout=10).status_code == 405
            assert requests.post(server.url + "/predict", data=b"x" * 200, timeout=10).status_code == 413
            counts = server.status()["counts"]
            assert (counts["failed"], counts["queued"], counts["running"], counts["completed"]) == (1, 1, 1, 0)
            release.touch()
            assert ChunkReader(queued).status == 200
        finally:
            queued.close()
    finally:
        release.touch()
        busy.close()
    wait_until(lambda: server.status()["counts"]["completed"] == 2, message="A and B to complete")
    assert server.status()["counts"]["failed"] == 1


STUCK_IGNORING_SIGTERM = """
import re, signal, litkit

class Stuck(litkit.LitAPI):
    def setup(self, device):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    def predict(self, x):
        open(x["started"], "w").close()
        return {"match": bool(re.match(r"(a+)+$", "a" * 30 + "b"))}  # a minute in C, GIL held
"""


def test_stop_escalates_to_sigkill_for_a_worker_that_ignores_the_hang_up_and_sigterm(serve, tmp_path):
    """README: stop() closes each worker's channel, then sends SIGTERM, then SIGKILL after a grace
    period. A worker in C holding the GIL (its watcher thread cannot run) that ignores SIGTERM is
    killed about 2 + 1 s after the stop began."""
    namespace = {"__name__": "__main__"}
    exec(STUCK_IGNORING_SIGTERM, namespace)
    server = serve(namespace["Stuck"]())
    worker = psutil.Process(server.status()["workers"][0]["pid"])
    started = tmp_path / "started"
    busy = raw_post(server.url, json.dumps({"started": str(started)}).encode())
    try:
        wait_until(started.exists, message="the hook to be inside the regex")
        stopping = time.monotonic()
        server.stop()
        took = time.monotonic() - stopping
    finally:
        busy.close()
    assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE
    assert 2.9 < took < 8, f"stop() took {took:.2f}s"


def test_servers_still_running_at_interpreter_exit_are_stopped(tmp_path):
    """README: servers still running when the interpreter exits are stopped then, workers included."""
    script = tmp_path / "leaves_it_running.py"
    script.write_text(
        "import atexit, json, litkit\n"
        "class Echo(litkit.LitAPI):\n"
        "    def predict(self, x):\n"
        "        return x\n"
        "# atexit runs last-registered first: this runs after litkit's own exit handler\n"
        "atexit.register(lambda: print(json.dumps([server.state] + [w['state'] for w in server.status()['workers']]), flush=True))\n"
        "server = litkit.serve(Echo(), port=0, workers=2)\n"
        "print(json.dumps([w['pid'] for w in server.status()['workers']]), flush=True)\n"
        "# no stop(): the interpreter ends here\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    pids, states = map(json.loads, result.stdout.splitlines()[-2:])
    assert states == ["stopped", "stopped", "stopped"]  # stopped by litkit at exit, not killed with the process
    assert len(pids) == 2
    assert not [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
