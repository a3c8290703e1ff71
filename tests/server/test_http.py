"""The HTTP surface: answers, error statuses and their JSON, health, info, request ids."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

import apis
import litkit
from conftest import ChunkReader, raw_post, wait_until


def post(server, body, **kwargs):
    kwargs.setdefault("timeout", 10)
    if isinstance(body, (bytes, str)) or hasattr(body, "__next__"):
        return requests.post(server.url + "/predict", data=body, **kwargs)
    return requests.post(server.url + "/predict", json=body, **kwargs)


@pytest.fixture
def echo(serve, events):
    return serve(apis.Echo(events.path), max_queue=2, max_body_size=1000)


def test_predict_answers_the_json_of_encode_response(serve):
    server = serve(apis.Doubler())
    response = post(server, {"input": 21})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"output": 42}
    assert server.predict({"input": 3}) == {"output": 6}


@pytest.mark.parametrize("body", [b"{not json", b'{"input": 1', b"\xff\xfe", b""])
def test_malformed_json_is_400_and_the_worker_keeps_serving(echo, body):
    response = post(echo, body)
    assert response.status_code == 400
    error = response.json()
    assert error["error"].startswith("request body is not valid JSON")
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert post(echo, {"x": 1}).json() == {"echo": {"x": 1}}


def test_http_error_from_a_hook_gives_its_status(echo):
    response = post(echo, {"raise": "http"})
    assert response.status_code == 422
    assert response.json()["error"] == "input must be a list"
    with pytest.raises(litkit.HTTPError) as raised:
        echo.predict({"raise": "http"})
    assert raised.value.status == 422 and raised.value.message == "input must be a list"


def test_exception_in_a_hook_is_500_with_type_and_message_and_the_worker_lives_on(echo, caplog):
    pid = post(echo, {"pid": True}).json()["pid"]
    response = post(echo, {"raise": "value"})
    assert response.status_code == 500
    assert response.json()["error"] == "ValueError: bad value 42"
    # Logged by the server; on 3.10-3.12 its process forwards the record after the answer went out.
    wait_until(lambda: "Traceback" in caplog.text and "bad value 42" in caplog.text, message="the hook's traceback in the log")
    assert post(echo, {"pid": True}).json()["pid"] == pid
    counts = echo.status()["counts"]
    assert counts["failed"] == 1 and counts["completed"] == 2
    assert echo.status()["recent"][1]["error"] == "ValueError: bad value 42"


def test_a_result_json_cannot_encode_is_a_500_that_says_so(serve):
    class Unencodable(litkit.LitAPI):
        def predict(self, x):
            return {1, 2, 3}

    server = serve(Unencodable())
    response = post(server, {})
    assert response.status_code == 500
    assert "encode_response returned a value JSON cannot encode" in response.json()["error"]


def test_body_over_max_body_size_is_413_by_content_length(echo):
    response = post(echo, b'{"x": "' + b"a" * 2000 + b'"}')
    assert response.status_code == 413
    assert "max_body_size=1000" in response.json()["error"]


def test_chunked_body_over_max_body_size_is_413(echo):
    def pieces():
        yield b'{"x": "'
        for _ in range(30):
            yield b"a" * 100
        yield b'"}'

    response = post(echo, pieces())
    assert response.status_code == 413
    assert post(echo, {"x": 1}).status_code == 200


def test_full_queue_is_503(echo, events, tmp_path):
    release = tmp_path / "release"
    held = [raw_post(echo.url, json.dumps({"tag": "busy", "wait_for": str(release)}).encode())]
    events.wait_for("request")
    held += [raw_post(echo.url, b'{"tag": "queued"}') for _ in range(2)]
    wait_until(lambda: echo.status()["counts"]["queued"] == 2, message="two queued requests")
    response = post(echo, {"tag": "overflow"})
    assert response.status_code == 503
    assert "max_queue=2" in response.json()["error"]
    release.touch()
    for sock in held:
        reader = ChunkReader(sock)
        assert reader.status == 200
        reader.close()
        sock.close()


def test_unknown_path_is_404_and_wrong_method_is_405(echo):
    response = requests.get(echo.url + "/nope", timeout=10)
    assert response.status_code == 404
    assert "POST /predict" in response.json()["error"]
    response = requests.get(echo.url + "/predict", timeout=10)
    assert response.status_code == 405
    assert response.json()["request_id"] == response.headers["X-Request-ID"]


def test_custom_api_path(serve):
    server = serve(apis.Doubler(), api_path="/double")
    assert requests.post(server.url + "/double", json={"input": 2}, timeout=10).json() == {"output": 4}
    assert requests.post(server.url + "/predict", json={"input": 2}, timeout=10).status_code == 404
    assert server.predict({"input": 5}) == {"output": 10}


def test_health_and_info(serve):
    server = serve(apis.Ticker(), workers=2)
    health = requests.get(server.url + "/health", timeout=10)
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    info = requests.get(server.url + "/info", timeout=10).json()
    assert info["litkit_version"] == litkit.__version__
    assert info["api"] == "Ticker"
    assert info["workers"] == 2
    assert info["stream"] is True
    assert info["paths"]["predict"] == "/predict"


def test_health_is_503_until_every_worker_is_ready(events):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started: list[litkit.Server] = []
    thread = threading.Thread(target=lambda: started.append(litkit.serve(apis.Echo(events.path, setup_delay=1.0), port=port)))
    thread.start()
    try:
        def health():
            try:
                return requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
            except requests.ConnectionError:
                return None

        # A Response is falsy for error statuses: wait for any answer, wrapped in a list.
        early = wait_until(lambda: (lambda r: r is not None and [r])(health()), message="the server to accept connections")[0]
        assert early.status_code == 503
        assert early.json()["status"] == "unavailable"
        thread.join(30)
        assert health().status_code == 200
    finally:
        thread.join(30)
        for server in started:
            server.stop()


def test_request_id_is_echoed_or_generated(echo):
    response = post(echo, {"x": 1}, headers={"X-Request-ID": "trace-abc.123"})
    assert response.headers["X-Request-ID"] == "trace-abc.123"
    assert echo.status()["recent"][0]["id"] == "trace-abc.123"
    generated = post(echo, {"x": 1}).headers["X-Request-ID"]
    assert len(generated) == 16
    # A header that could inject anything into logs or responses is replaced, not echoed.
    assert post(echo, {"x": 1}, headers={"X-Request-ID": "bad id\t<script>"}).headers["X-Request-ID"] != "bad id\t<script>"
    assert requests.get(echo.url + "/health", headers={"X-Request-ID": "h-1"}, timeout=10).headers["X-Request-ID"] == "h-1"


def test_status_snapshot_schema(serve):
    server = serve(apis.Doubler(), workers=2)
    for i in range(3):
        server.predict({"input": i})
    # A worker reports DONE just after its answer went out: wait for that, not for the answer.
    status = wait_until(lambda: (lambda s: all(w["state"] == "idle" for w in s["workers"]) and s)(server.status()), message="idle workers")
    assert status["url"] == server.url
    assert status["state"] == "serving"
    assert [w["id"] for w in status["workers"]] == [0, 1]
    for worker in status["workers"]:
        assert worker["state"] == "idle" and worker["restarts"] == 0 and worker["pid"] > 0
    assert sum(w["handled"] for w in status["workers"]) == 3
    assert status["counts"] == {"queued": 0, "running": 0, "completed": 3, "failed": 0, "cancelled": 0, "timed_out": 0}
    assert len(status["recent"]) == 3
    newest = status["recent"][0]
    assert set(newest) == {"id", "path", "version", "state", "chunks", "duration_s", "elapsed_s", "first_chunk_s", "error"}
    assert newest["state"] == "completed" and newest["path"] == "/predict" and newest["duration_s"] >= 0 and newest["version"] == 1
    assert status["version"] == 1 and status["versions"] == [{"version": 1, "state": "serving", "in_flight": 0}]
    assert {w["version"] for w in status["workers"]} == {1}
    assert newest["elapsed_s"] == newest["duration_s"] and newest["first_chunk_s"] is None  # no stream, no chunks
    stats = status["stats"]
    assert set(stats) == {"window_s", "completed", "throughput", "p50_s", "p95_s"}
    assert stats["completed"] == 3 and stats["throughput"] > 0
    assert 0 <= stats["p50_s"] <= stats["p95_s"] <= max(entry["duration_s"] for entry in status["recent"])
    assert status["logs"] == [] and status["api"] == "Doubler"


def test_recent_keeps_the_newest_100(serve):
    server = serve(apis.Echo())
    for i in range(105):
        server.predict({"n": i})
    recent = server.status()["recent"]
    assert len(recent) == 100
    assert server.status()["counts"]["completed"] == 105


def test_server_stays_responsive_while_a_cell_waits(serve, events, tmp_path):
    """A blocking call from the serving thread's own process works right after serve() returns."""
    server = serve(apis.Echo(events.path), workers=2)
    started = time.monotonic()
    assert requests.get(server.url + "/health", timeout=5).status_code == 200
    assert time.monotonic() - started < 1.0
