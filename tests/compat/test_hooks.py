"""LitServe's hooks under ``import litkit as ls``: self.log with ls.Logger, callbacks, health(),
pydantic requests and responses; each over real HTTP."""

from __future__ import annotations

import threading

import cloudpickle
import pytest
import requests

import litkit as ls
import litserve_apis as apis
import pydantic_apis
from conftest import wait_until
from runner import run  # noqa: F401 - the fixture

cloudpickle.register_pickle_by_value(apis)
cloudpickle.register_pickle_by_value(pydantic_apis)


class Collect(ls.Logger):
    def __init__(self):
        self.entries = []
        self.thread_names = set()

    def process(self, key, value):
        self.entries.append((key, value))
        self.thread_names.add(threading.current_thread().name)


def post(server, body, path="/predict"):
    return requests.post(server.url + path, json=body, timeout=10)


def test_self_log_reaches_every_logger(run):
    first, second = Collect(), Collect()
    server = run(ls.LitServer(apis.Logs(), loggers=[first, second]))
    for value in (2, 3):
        assert post(server, {"input": value}).json() == {"output": value**2}
    wait_until(lambda: len(second.entries) == 2, message="two log entries")
    assert first.entries == second.entries == [("input", 2), ("input", 3)]
    assert all(name.startswith("litkit-loggers-") for name in first.thread_names)  # not the server's thread


def test_self_log_without_loggers_drops_the_entry_and_serves(run):
    server = run(ls.LitServer(apis.Logs()))
    assert post(server, {"input": 4}).json() == {"output": 16}


def test_a_logger_mounting_an_app_is_refused():
    with pytest.raises(TypeError, match="cannot mount ASGI apps"):
        Collect().mount("/metrics", object())


class Events(ls.Callback):
    """Records the server-side events here; the worker-side ones go through self.log."""

    def __init__(self):
        self.server_events = []

    def on_server_start(self, litserver):
        self.server_events.append(("start", type(litserver).__name__))

    def on_server_end(self, litserver):
        self.server_events.append(("end", type(litserver).__name__))

    def on_before_setup(self, lit_api):
        lit_api.events = ["before_setup"]

    def on_after_setup(self, lit_api):
        lit_api.events.append("after_setup")

    def on_before_decode_request(self, lit_api):
        lit_api.events.append("before_decode_request")

    def on_after_decode_request(self, lit_api):
        lit_api.events.append("after_decode_request")

    def on_before_predict(self, lit_api):
        lit_api.events.append("before_predict")

    def on_after_predict(self, lit_api):
        lit_api.events.append("after_predict")

    def on_before_encode_response(self, lit_api):
        lit_api.events.append("before_encode_response")

    def on_after_encode_response(self, lit_api):
        lit_api.events.append("after_encode_response")
        lit_api.log("events", lit_api.events)
        lit_api.events = []


def test_callbacks_run_at_litserves_hook_points(run):
    events, log = Events(), Collect()
    lit_server = ls.LitServer(apis.SimpleLitAPI(), callbacks=[events], loggers=log)
    server = run(lit_server)
    assert events.server_events == [("start", "LitServer")]
    assert post(server, {"input": 3}).json() == {"output": 9}
    wait_until(lambda: log.entries, message="the events of one request")
    assert log.entries == [("events", [
        "before_setup", "after_setup",
        "before_decode_request", "after_decode_request", "before_predict", "after_predict", "before_encode_response", "after_encode_response",
    ])]
    server.stop()
    wait_until(lambda: len(events.server_events) == 2, message="on_server_end")
    assert events.server_events[1] == ("end", "LitServer")


def test_callbacks_keep_a_streaming_predict_streaming(run):
    server = run(ls.LitServer(apis.StreamingAPI(stream=True), callbacks=ls.Callback()))
    with requests.post(server.url + "/predict", json={"n": 2}, stream=True, timeout=10) as answer:
        assert answer.headers["Content-Type"] == "application/x-ndjson"
        assert len([line for line in answer.iter_lines() if line]) == 2


class PerRequest(ls.Callback):
    def __init__(self):
        self.seen = []

    def on_request(self, active_requests, litserver):
        self.seen.append(("request", active_requests))

    def on_response(self, litserver):
        self.seen.append(("response", None))


def test_on_request_and_on_response_run_per_request_in_the_serving_process(run):
    callback = PerRequest()
    server = run(ls.LitServer(apis.RefusesOdd(), callbacks=callback, track_requests=True))
    assert post(server, {"input": 2}).status_code == 200
    assert post(server, {"input": 3}).status_code == 422  # an error: on_request, but no on_response, as in LitServe
    assert callback.seen == [("request", 1), ("response", None), ("request", 1)]


def test_a_failing_on_request_is_logged_and_the_request_goes_on(run, caplog):
    class Failing(ls.Callback):
        def on_request(self, **kwargs):
            raise RuntimeError("callback bug")

    server = run(ls.LitServer(apis.SimpleLitAPI(), callbacks=Failing()))
    assert post(server, {"input": 2}).json() == {"output": 4}
    assert "Failing.on_request raised" in caplog.text


def test_health_hook_decides_health(run, tmp_path):
    status = tmp_path / "status"
    status.write_text("ok")
    server = run(ls.LitServer(apis.HealthFile(str(status))))
    healthy = requests.get(server.url + "/health", timeout=10)
    assert (healthy.status_code, healthy.text) == (200, "ok")  # LitServe's text
    status.write_text("loading")
    unhealthy = requests.get(server.url + "/health", timeout=10)
    assert (unhealthy.status_code, unhealthy.text) == (503, "not ready")
    assert post(server, {"input": 2}).status_code == 200  # requests are still served, as in LitServe


def test_async_health_hook(run):
    server = run(ls.LitServer(apis.AsyncHealth()))
    assert requests.get(server.url + "/health", timeout=10).status_code == 503


def test_pydantic_request_and_response(run):
    server = run(ls.LitServer(pydantic_apis.Greeter()))
    assert post(server, {"name": "Ada", "age": 36}).json() == {"text": "hello Ada", "adult": True}
    invalid = post(server, {"name": "Ada", "age": "old"})
    assert invalid.status_code == 422
    message = invalid.json()["detail"]
    assert "request body does not match Person" in message and "age: Input should be a valid integer" in message
    missing = post(server, {"age": 3})
    assert missing.status_code == 422 and "name: Field required" in missing.json()["detail"]


def test_pydantic_is_imported_only_where_an_annotation_asks(run):
    """A worker of an API without pydantic annotations never imports it (the package itself never does)."""
    server = run(ls.LitServer(apis.SimpleLitAPI()))
    assert post(server, {"input": 2}).status_code == 200
    import subprocess
    import sys

    code = "import sys, litkit, litkit.worker.main, litkit.specs, litkit.wire.encoding; print('pydantic' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_context_argument_is_one_dict_per_request(run):
    server = run(ls.LitServer(apis.WithContext()))
    assert post(server, {"input": 1}).json() == {"output": 2, "seen_by": ["decode_request", "predict", "encode_response"]}
    assert post(server, {"input": 5}).json()["seen_by"] == ["decode_request", "predict", "encode_response"]  # a fresh dict


def test_context_argument_under_batching(run):
    import concurrent.futures

    server = run(ls.LitServer(apis.BatchedContext(max_batch_size=4, batch_timeout=0.3)))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: post(server, {"input": i}).json(), range(4)))
    assert [answer["input"] for answer in answers] == [0, 1, 2, 3]
    assert max(answer["batch_size"] for answer in answers) > 1


def test_context_argument_with_the_openai_spec_holds_the_request_options(run):
    import openai

    server = run(ls.LitServer(apis.ChatContext(spec=ls.OpenAISpec())))
    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=10) as client:
        completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], temperature=0.2, max_tokens=9)
    assert completion.choices[0].message.content == "temperature=0.2 max_tokens=9 has_messages=False"


def test_multipart_form_upload(run):
    server = run(ls.LitServer(apis.FileAPI()))
    answer = requests.post(server.url + "/predict", files={"content": ("notes.txt", b"hello file", "text/plain")}, data={"name": "Ada"}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"name": "Ada", "filename": "notes.txt", "type": "text/plain", "data": "hello file", "size": 10}


def test_urlencoded_form(run):
    server = run(ls.LitServer(apis.FormFields()))
    answer = requests.post(server.url + "/predict", data={"b": "two words", "a": "1"}, timeout=10)
    assert answer.json() == {"a": "1", "b": "two words"}


def test_a_multipart_body_without_a_boundary_is_a_400(run):
    server = run(ls.LitServer(apis.FormFields()))
    answer = requests.post(server.url + "/predict", data=b"whatever", headers={"Content-Type": "multipart/form-data"}, timeout=10)
    assert answer.status_code == 400
    assert "needs a boundary" in answer.json()["detail"]


def test_default_batch_stacks_torch_tensors(run):
    pytest.importorskip("torch")
    import concurrent.futures

    server = run(ls.LitServer(apis.TorchBatch(max_batch_size=3, batch_timeout=5.0)))
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda i: post(server, {"vector": [float(i), 1.0]}).json(), range(3)))
    assert sorted(answer["row_sum"] for answer in answers) == [1.0, 2.0, 3.0]
    assert all(answer["type"] == "Tensor" and answer["batch_shape"] == [3, 2] for answer in answers)
