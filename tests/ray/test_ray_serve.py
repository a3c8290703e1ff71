"""litkit on a real local Ray Serve (litkit.ray): the same LitAPI classes, the same HTTP contract.

One Ray session for every Ray test module (Ray's start-up is slow and heavy on 2 cores): started by
conftest's session-scoped ``ray_serve`` fixture with ``ray.init(num_cpus=2, include_dashboard=False)``; the applications the
tests share are deployed together once (``apps``), every replica at a tenth of a CPU so that all
fit; every application is deleted and Ray shut down at the end. Marked ``ray``: the main run
leaves it out, CI runs it as a step of its own (``python -m pytest -m ray tests/ray``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

if os.environ.get("LITKIT_REQUIRE_RAY"):  # CI's Ray step: a missing extra fails instead of skipping
    import ray
else:
    ray = pytest.importorskip("ray", reason="needs the Ray extra: pip install 'litkit[ray]'")

import apis
from conftest import ChunkReader, Events, notebook_stdout_lines, raw_post, wait_until
from helpers import litkit_command

import litkit
from litkit.demo import TokenStreamer

# Ray's own modules warn about their use of deprecated APIs (pydantic's, for one): not ours to fix.
pytestmark = [pytest.mark.ray, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray"), pytest.mark.timeout(240)]

FRACTION = {"num_cpus": 0.1}


class App:
    """One deployed application: its base URL (route prefix included) and its event file."""

    def __init__(self, base: str, name: str, events: Events) -> None:
        self.url = f"{base}/{name}"
        self.name = name
        self.events = events
        self.client = litkit.Client(self.url)

    def post(self, body: bytes, headers: dict[str, str] | None = None, path: str = "/predict") -> socket.socket:
        """``conftest.raw_post`` to ``path`` under this application's route prefix."""
        base = self.url.removesuffix("/" + self.name)
        return raw_post(base, body, headers, path=f"/{self.name}{path}")


def _holder(events: str) -> litkit.LitAPI:
    class Holder(litkit.LitAPI):
        """Records entering and leaving predict, which holds the replica for ``hold`` seconds."""

        def predict(self, x):
            apis.record(events, "enter")
            time.sleep(x["hold"])
            apis.record(events, "exit")
            return {}

    return Holder()


@pytest.fixture(scope="module")
def apps(ray_serve: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, App]]:
    """The applications the tests share, deployed in one go (each under the route prefix /name)."""
    from ray import serve
    from ray.serve import RunTarget

    folder = tmp_path_factory.mktemp("ray-events")
    names = ("echo", "ticker", "slow", "async", "chat", "batch", "rows", "late", "serial", "multi", "demo")
    events = {name: Events(folder / f"{name}.jsonl") for name in names}
    made = {
        "echo": (apis.Echo(events["echo"].path), {"num_replicas": 2}),
        "ticker": (apis.Ticker(events["ticker"].path), {}),
        "slow": (apis.SlowUntilCancelled(events["slow"].path), {"timeout": 1.0}),
        "async": (apis.AsyncTicker(events["async"].path), {}),
        "chat": (apis.ChatWords(events["chat"].path), {"spec": litkit.specs.OpenAIChat(model="words")}),
        "batch": (apis.BatchDoubler(events["batch"].path), {"max_batch_size": 4, "batch_timeout": 0.5}),
        "rows": (apis.BatchCancelWatcher(events["rows"].path), {"max_batch_size": 2, "batch_timeout": 30.0}),
        "late": (apis.Ticker(events["late"].path), {"timeout": 0.5}),
        "serial": (_holder(events["serial"].path), {}),
        "multi": ({"/double": apis.Doubler(), "/tick": apis.Ticker(events["multi"].path)}, {}),
        "demo": (TokenStreamer(), {}),  # from an importable module: it travels by reference
    }
    targets = [
        RunTarget(litkit.ray_app(api, ray_actor_options=FRACTION, **options), name=name, route_prefix=f"/{name}")
        for name, (api, options) in made.items()
    ]
    serve.run_many(targets)
    yield {name: App(ray_serve, name, events[name]) for name in made}
    for name in made:
        serve.delete(name, _blocking=False)


# -- JSON, errors, request ids ---------------------------------------------------------------------


def test_json_answers_and_the_error_mapping(apps):
    client = apps["echo"].client
    assert client.predict({"x": 1}) == {"echo": {"x": 1}}
    with pytest.raises(litkit.HTTPError) as error:
        client.predict({"raise": "http"})
    assert (error.value.status, error.value.message) == (422, "input must be a list")
    with pytest.raises(litkit.HTTPError) as error:
        client.predict({"raise": "value"})
    assert (error.value.status, error.value.message) == (500, "ValueError: bad value 42")


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    reader = ChunkReader(sock)
    try:
        return reader.status, reader.headers, json.loads(reader.body())
    finally:
        reader.close()
        sock.close()


def test_bad_bodies_are_400_and_the_request_id_is_echoed(apps):
    status, headers, body = _answer(apps["echo"].post(b'{"x": ', {"X-Request-ID": "job-42"}))
    assert status == 400
    assert body["error"].startswith("request body is not valid JSON")
    assert body["request_id"] == headers["x-request-id"] == "job-42"
    status, _, body = _answer(apps["echo"].post(b"[NaN]"))
    assert status == 400 and "NaN is not a JSON value" in body["error"]
    # decode_request that cannot use the body: Doubler-like access of a missing key
    status, _, body = _answer(apps["batch"].post(b'{"raise": "http"}'))
    assert (status, body["error"]) == (422, "input must be a number")


def test_decode_request_failing_is_400(apps):
    status, _, body = _answer(apps["ticker"].post(b"[1, 2]"))  # Ticker's decode_request calls request.get
    assert status == 400
    assert body["error"] == "decode_request could not use this request body: AttributeError: 'list' object has no attribute 'get'"


def test_unknown_paths_and_methods(apps):
    status, _, body = _answer(apps["echo"].post(b"{}", path="/nowhere"))
    assert status == 404 and "POST to /predict" in body["error"]
    with urllib.request.urlopen(apps["echo"].url + "/health", timeout=10) as answer:
        assert json.load(answer) == {"status": "ok"}


def test_setup_runs_once_per_replica_with_the_cpu(apps):
    """Two replicas: two setups, in two processes, each with "cpu" (no GPU was asked for)."""
    setups = apps["echo"].events.wait_for("setup", count=2)
    assert len(setups) == 2
    assert {s["device"] for s in setups} == {"cpu"}
    assert len({s["pid"] for s in setups}) == 2


def test_a_class_defined_in_the_test_reaches_the_replicas(ray_serve):
    """A class no replica can import (defined here, like a notebook cell's) travels by value."""
    from ray import serve

    class Local(litkit.LitAPI):
        def predict(self, x):
            return {"local": x["n"] + 1}

    serve.run(litkit.ray_app(Local(), ray_actor_options=FRACTION), name="local", route_prefix="/local")
    try:
        assert litkit.Client(ray_serve + "/local").predict({"n": 1}) == {"local": 2}
    finally:
        serve.delete("local", _blocking=False)


def test_sync_hooks_run_one_request_at_a_time_per_replica(apps):
    """As in a litkit worker: Ray hands a replica up to 5 requests at once, and they wait in it;
    the hooks of one never overlap another's."""
    app = apps["serial"]
    threads = [threading.Thread(target=app.client.predict, args=({"hold": 0.2},)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    spans = sorted(zip((e["t"] for e in app.events.named("enter")), (e["t"] for e in app.events.named("exit"))))
    assert len(spans) == 3
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans


def test_a_class_from_an_importable_module_reaches_the_replicas(apps):
    with apps["demo"].client.stream({"prompt": "a b", "max_tokens": 3, "delay": 0}) as chunks:
        assert list(chunks) == [{"index": 0, "token": "a"}, {"index": 1, "token": "b"}, {"index": 2, "token": "a"}]


def test_a_class_from_a_notebook_cell_in_a_real_kernel(ray_serve):
    """A class defined in a cell, served with ``serve(backend="ray")`` from the kernel, which joins
    this module's Ray (the one Ray session) as a second driver."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    address = ray.get_runtime_context().gcs_address
    port = int(ray_serve.rsplit(":", 1)[1])
    cells = [
        "import litkit\n\nclass Cell(litkit.LitAPI):\n    def predict(self, x):\n        return {'cell': x['n'] * 10}",
        f"server = litkit.serve(Cell(), backend='ray', address={address!r}, port={port}, name='nb', route_prefix='/nb', "
        "ray_actor_options={'num_cpus': 0.1})\nprint('answer:', server.predict({'n': 4}))\nprint('url:', server.url)",
        "server.stop()\nprint('state:', server.state)",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells])
    NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    printed = notebook_stdout_lines(notebook)
    assert "answer: {'cell': 40}" in printed
    assert f"url: {ray_serve}/nb" in printed
    assert "state: stopped" in printed


_WALK = """
import ipywidgets

def shown(widget):
    \"\"\"Every widget under ``widget``, itself included.\"\"\"
    yield widget
    for child in getattr(widget, "children", ()):
        yield from shown(child)
"""


def test_the_live_view_in_a_real_kernel(ray_serve):
    """``serve(backend="ray")`` as a cell's last expression shows the live view of the application:
    Ray's status and replicas, the URL, and a Stop button that deletes the application; nothing of
    the local dashboard's that Ray cannot do (Cancel, workers). The kernel joins this module's Ray."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient
    from ray import serve

    address = ray.get_runtime_context().gcs_address
    port = int(ray_serve.rsplit(":", 1)[1])
    cells = [
        "import json, time\nimport litkit\n" + _WALK + "\nclass Viewed(litkit.LitAPI):\n    def predict(self, x):\n        return {'seen': x}",
        f"server = litkit.serve(Viewed(), backend='ray', address={address!r}, port={port}, name='view', route_prefix='/view', "
        "ray_actor_options={'num_cpus': 0.1})\nserver",
        # The view refreshes on its own thread: wait (bounded) until it shows the running replica.
        "deadline = time.monotonic() + 30\n"
        "texts = lambda: [w.value for w in shown(server.widget) if isinstance(w, ipywidgets.HTML)]\n"
        "while not any('1 <span class=\"litkit-state\" data-state=\"RUNNING\"' in t for t in texts()) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "print('view:', json.dumps(texts()))\n"
        "print('buttons:', json.dumps([w.description for w in shown(server.widget) if isinstance(w, ipywidgets.Button)]))",
        "[button] = [w for w in shown(server.widget) if isinstance(w, ipywidgets.Button)]\nbutton.click()\n"
        "print('state:', server.state)\nprint('button:', button.description, button.disabled)",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells])
    NotebookClient(notebook, timeout=120, iopub_timeout=30, kernel_name="python3", store_widget_state=True).execute()
    errors = [o for cell in notebook.cells for o in cell.outputs if o.output_type == "error"]
    assert errors == [], "\n".join(f"{e.ename}: {e.evalue}" for e in errors)
    printed = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in notebook_stdout_lines(notebook) if ": " in line}
    view = " ".join(json.loads(printed["view"]))
    assert f"POST {ray_serve}/view/predict" in view
    assert 'data-state="serving"' in view
    assert "Ray Serve application <code>view</code>" in view and 'litkit-ray-status"><span class="litkit-state" data-state="RUNNING"' in view
    assert "<code>Viewed</code>" in view and "/predict" in view  # the deployment's row
    assert "has no request counts" in view
    assert json.loads(printed["buttons"]) == ["Stop"]  # no Cancel: on Ray a hang-up cancels
    assert (printed["state"], printed["button"]) == ("stopped", "Stopped True")
    assert "view" not in serve.status().applications
    # The cell's output is the widget, and the notebook keeps its final figures.
    views = [o for cell in notebook.cells for o in cell.outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(views) == 1
    saved = notebook.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"].values()
    values = " ".join(m["state"].get("value", "") for m in saved if m["model_name"] == "HTMLModel")
    assert 'data-state="stopped"' in values and 'data-state="STOPPED"' in values
    assert any(m["model_name"] == "ButtonModel" and m["state"].get("description") == "Stopped" and m["state"].get("disabled") for m in saved)


# -- streams and cancellation ------------------------------------------------------------------------


def test_ndjson_chunk_by_chunk_and_sse(apps):
    client = apps["ticker"].client
    with client.stream({"n": 3, "interval": 0}) as chunks:
        assert list(chunks) == [{"i": 0}, {"i": 1}, {"i": 2}]
    with reading(apps["ticker"], b'{"n": 2, "interval": 0}', {"Accept": "text/event-stream"}) as reader:
        assert reader.headers["content-type"].startswith("text/event-stream")
        assert [reader.line() for _ in range(6)] == [b'data: {"i":0}', b"", b'data: {"i":1}', b"", b"data: [DONE]", b""]


def test_an_error_mid_stream_is_a_final_error_line(apps):
    with reading(apps["ticker"], b'{"n": 5, "fail_at": 2, "interval": 0}', {"X-Request-ID": "mid-1"}) as reader:
        assert reader.status == 200
        lines = [json.loads(reader.line()) for _ in range(3)]
    assert lines == [{"i": 0}, {"i": 1}, {"error": "RuntimeError: failed at chunk 2", "request_id": "mid-1"}]


@contextlib.contextmanager
def reading(app: App, body: bytes, headers: dict[str, str] | None = None, path: str = "/predict") -> Iterator[ChunkReader]:
    """A raw POST's response, read line by line; leaving the block hangs up."""
    sock = app.post(body, headers, path)
    reader = ChunkReader(sock)
    try:
        yield reader
    finally:
        reader.close()
        sock.close()


def _hang_up_after(app: App, chunks: int, body: bytes) -> float:
    with reading(app, body) as reader:
        assert reader.status == 200
        for _ in range(chunks):
            reader.line()
    return time.monotonic()


@pytest.mark.parametrize("name", ["ticker", "async"])
def test_a_hang_up_stops_the_generator(apps, name):
    """Sync generators (driven from a thread of their own) and async ones alike: at most one more
    chunk after the client leaves, and ``finally`` runs, with a chunk every 100 ms: Ray's proxy
    takes 2-10 ms here to cancel the replica's task, and a generator keeps yielding until then
    (with a chunk every 1 ms, 2-4 follow the hang-up; benchmarks/ray_backend.py measures it, with
    the time to ``finally``). Pinned: Ray's documented StreamingResponse over a sync generator never
    closes it when the client leaves."""
    app = apps[name]
    before = len(app.events.named("finally"))
    left = _hang_up_after(app, 3, json.dumps({"interval": 0.1, "tag": f"hang-{name}"}).encode())
    ended = app.events.wait_for("finally", count=before + 1)[-1]
    after = [e for e in app.events.named("yield") if e["t"] > left and e["pid"] == ended["pid"]]
    assert len(after) <= 1, after
    stopped = [e["event"] for e in app.events.read() if e["event"] in ("generator_exit", "cancelled_error") and e["t"] > left]
    if name == "ticker":
        assert stopped == ["generator_exit"]  # at its yield
    else:
        assert len(stopped) == 1  # CancelledError at its await, or GeneratorExit at its yield


def test_cancelled_turns_true_when_the_client_leaves(apps):
    app = apps["slow"]
    before = len(app.events.named("saw_cancelled"))
    sock = app.post(b"{}")
    app.events.wait_for("started", count=before + 1)
    sock.close()
    app.events.wait_for("saw_cancelled", count=before + 1)  # predict loops until cancelled(): long before its own end


def test_timeout_is_504_and_cancels(apps):
    app = apps["slow"]
    before = len(app.events.named("saw_cancelled"))
    started = time.monotonic()
    status, _, body = _answer(app.post(b"{}"))
    assert status == 504
    assert body["error"].startswith("no response within timeout=1s")
    assert 0.9 < time.monotonic() - started < 5
    app.events.wait_for("saw_cancelled", count=before + 1)


def test_timeout_before_a_streams_first_chunk(apps):
    """504 at the deadline even while predict is busy; its generator is closed once it yields."""
    app = apps["late"]
    started = time.monotonic()
    status, _, body = _answer(app.post(b'{"sleep_steps": 300, "tag": "late"}'))
    assert status == 504 and "timeout=0.5s" in body["error"]
    assert time.monotonic() - started < 2.5  # not the 3 s predict is busy for
    app.events.wait_for("generator_exit")
    app.events.wait_for("finally")


def test_several_endpoints_in_one_application(apps):
    """``ray_app({path: api})``: a deployment per endpoint behind a router; answers, errors and
    streams are relayed as they come, and a hang-up still closes the generator."""
    app = apps["multi"]
    assert app.client.predict({"input": 3}, path="/double") == {"output": 6}
    status, _, body = _answer(app.post(b"{}", path="/double"))
    assert (status, body["error"]) == (400, "decode_request could not use this request body: KeyError: 'input'")
    status, _, body = _answer(app.post(b"{}", path="/nowhere"))
    assert status == 404 and "this application serves /double, /tick" in body["error"]
    with app.client.stream({"n": 3, "interval": 0}, path="/tick") as chunks:
        assert list(chunks) == [{"i": 0}, {"i": 1}, {"i": 2}]
    with reading(app, b'{"interval": 0.1}', path="/tick") as reader:  # the hang-up takes one more hop: tens of ms here
        assert reader.status == 200
        for _ in range(3):
            reader.line()
    left = time.monotonic()
    app.events.wait_for("finally", count=2)
    assert len([e for e in app.events.named("yield") if e["t"] > left]) <= 1


# -- OpenAI chat, batching -------------------------------------------------------------------------


def test_the_openai_chat_spec(apps):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=apps["chat"].url + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(model="words", messages=[{"role": "user", "content": "one two three"}], stream=True)
    words = [c.choices[0].delta.content for c in stream]
    assert "".join(w or "" for w in words) == "one two three"
    reply = client.chat.completions.create(model="words", messages=[{"role": "user", "content": "a b"}])
    assert reply.choices[0].message.content == "a b"
    assert [m.id for m in client.models.list()] == ["words"]


def test_batching_through_serve_batch(apps):
    app = apps["batch"]
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        results[i] = app.client.predict({"input": i, "tag": i})

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == {i: {"output": 2 * i} for i in range(4)}
    assert max(b["size"] for b in app.events.named("batch")) > 1


def test_cancelled_with_an_index_says_which_client_of_a_ray_batch_left(apps):
    """Bug (issue 27): in a batched predict on Ray, litkit.cancelled() answered for one request of
    the batch only (the context the batch ran in) and litkit.cancelled(1) raised IndexError ("not
    part of a batch"); now cancelled(i) is request i's, as in a litkit worker's batch."""
    app = apps["rows"]
    answers: dict[str, Any] = {}
    stays = threading.Thread(target=lambda: answers.update(stays=app.client.predict({"tag": "stays"})))
    gone = app.post(json.dumps({"tag": "gone"}).encode())
    stays.start()
    app.events.wait_for("batch")
    assert app.events.named("batch")[0]["size"] == 2
    gone.close()  # its client leaves while predict runs
    stays.join(timeout=30)
    assert answers == {"stays": {"tag": "stays"}}
    assert app.events.named("rows") == [{**app.events.named("rows")[0], "cancelled": {"gone": True, "stays": False}, "all": False}]


# -- serve(backend="ray"), the command line ------------------------------------------------------------


def test_serve_with_the_ray_backend(ray_serve):
    port = int(ray_serve.rsplit(":", 1)[1])
    with litkit.serve(apis.Ticker(), backend="ray", port=port, name="handle", route_prefix="/handle", ray_actor_options=FRACTION) as server:
        assert server.url == ray_serve + "/handle"
        with server.stream({"n": 2, "interval": 0}) as chunks:
            assert list(chunks) == [{"i": 0}, {"i": 1}]
        status = server.status()
        assert (status["state"], status["status"], status["replicas"]) == ("serving", "RUNNING", {"RUNNING": 1})
    assert server.status()["state"] == "stopped"
    server.stop()  # idempotent
    assert ray.is_initialized()  # a Ray it did not start is left running
    from ray import serve

    wait_until(lambda: "handle" not in serve.status().applications, 30, "the application to be deleted")


def test_serve_a_dict_of_endpoints_with_the_ray_backend(ray_serve):
    """``serve({path: api}, backend="ray")``: one application, a deployment per endpoint behind the
    router; the handle calls each path, refuses the wrong call for a path, and reports every
    deployment. Pinned: a dict was an error here although ``ray_app`` takes one."""
    from ray import serve

    port = int(ray_serve.rsplit(":", 1)[1])
    apis_by_path = {"/double": apis.Doubler(), "/tick": litkit.Endpoint(apis.Ticker(), timeout=30)}
    with litkit.serve(apis_by_path, backend="ray", port=port, name="many", route_prefix="/many", ray_actor_options=FRACTION) as server:
        assert (server.url, server.paths, server.api_path) == (ray_serve + "/many", ["/double", "/tick"], "/double")
        assert server.predict({"input": 4}, path="/double") == server.predict({"input": 4}) == {"output": 8}
        with server.stream({"n": 2, "interval": 0}, path="/tick") as chunks:
            assert list(chunks) == [{"i": 0}, {"i": 1}]
        with pytest.raises(ValueError, match=r"no endpoint at '/nowhere'; the Ray Serve application 'many' has /double, /tick"):
            server.predict({}, path="/nowhere")
        with pytest.raises(ValueError, match=r"the endpoint at /tick streams its answer; call server.stream"):
            server.predict({}, path="/tick")
        with pytest.raises(ValueError, match=r"the endpoint at /double answers with one JSON body"):
            server.stream({}, path="/double")
        status = server.status()
        assert (status["status"], status["paths"], status["replicas"]) == ("RUNNING", ["/double", "/tick"], {"RUNNING": 3})
        assert [(d["name"], d["paths"], d["replicas"]) for d in status["deployments"]] == [
            ("Doubler", ["/double"], {"RUNNING": 1}), ("Ticker", ["/tick"], {"RUNNING": 1}), ("Router", [], {"RUNNING": 1})]
        assert "2 endpoints: /double, /tick" in repr(server)
    assert server.status()["state"] == "stopped"
    wait_until(lambda: "many" not in serve.status().applications, 30, "the application to be deleted")


def test_options_ray_cannot_honour_are_errors(ray_serve):
    with pytest.raises(ValueError, match=r"workers= is an option of the in-process server; with backend='ray' use replicas="):
        litkit.serve(apis.Echo(), backend="ray", workers=2)
    with pytest.raises(ValueError, match=r"listens on port \d+ already"):
        litkit.serve(apis.Echo(), backend="ray", port=1)
    with pytest.raises(ValueError, match=r"listens on 127.0.0.1 already"):
        litkit.serve(apis.Echo(), backend="ray", host="0.0.0.0", port=0)
    with pytest.raises(TypeError, match="not options of the local server"):
        litkit.serve(apis.Echo(), replicas=2)


def test_ray_app_checks_options_as_serve_does_and_takes_the_apis_own():
    """Regression (issue 22): ray_app ignored the options an API was made with (it deployed
    ``api.api_path = "/x"`` at /predict and took ``max_batch_size`` from itself alone); it now
    takes them as serve() does, refuses a disagreeing value as serve() does, and checks values
    with the same messages (litkit.options). Building the application needs no running Ray."""
    from litkit.ray.app import endpoints_of

    api = apis.BatchDoubler()
    api.api_path, api.max_batch_size = "/x", 4
    litkit.ray_app(api)
    assert [endpoint.path for endpoint in endpoints_of(api)] == ["/x"]
    with pytest.raises(ValueError, match=r"BatchDoubler was made with max_batch_size=4 but is served with max_batch_size=8; set it in one place"):
        litkit.ray_app(api, max_batch_size=8)
    with pytest.raises(ValueError, match=r"BatchDoubler was made with api_path='/x' but is served at '/y'; give the path in one place"):
        litkit.ray_app({"/y": api})
    with pytest.raises(ValueError, match=r"batch_timeout must be a number of seconds from 0 to 3600 \(e.g. 0.01\), got 5000"):
        litkit.ray_app({"/a": litkit.Endpoint(apis.BatchDoubler(), max_batch_size=2, batch_timeout=5000)})
    litkit.ray_app(apis.BatchDoubler(), max_batch_size=300)  # Ray's replicas take batches a litkit worker does not (253)


def test_replicas_that_do_not_fit_fail_by_the_deadline(ray_serve):
    """Pinned: Ray leaves replicas that do not fit pending forever; serve() names what was asked."""
    started = time.monotonic()
    with pytest.raises(litkit.WorkerStartError) as error:
        litkit.serve(apis.Echo(), backend="ray", port=0, name="huge", route_prefix="/huge", ray_actor_options={"num_cpus": 8}, start_timeout=3)
    assert time.monotonic() - started < 20
    assert "1 replica(s) x {'num_cpus': 8}" in str(error.value)
    assert "of 2 CPU available" in str(error.value)


def test_a_failing_setup_is_a_worker_start_error(ray_serve):
    with pytest.raises(litkit.WorkerStartError) as error:
        litkit.serve(apis.FailingSetup(), backend="ray", port=0, name="broken", route_prefix="/broken", ray_actor_options=FRACTION, start_timeout=60)
    assert "model weights not found at /nowhere/model.bin" in str(error.value)


def test_the_command_line_deploys_on_ray(ray_serve, tmp_path: Path):
    app_file = tmp_path / "app.py"
    app_file.write_text(textwrap.dedent("""
        import litkit

        class Hello(litkit.LitAPI):
            def predict(self, x):
                return {"hello": x["name"]}
    """))
    address = ray.get_runtime_context().gcs_address
    port = ray_serve.rsplit(":", 1)[1]
    command = [
        *litkit_command(), "serve", f"{app_file}:Hello", "--backend", "ray", "--address", address, "--port", port, "--replicas", "1", "--num-cpus", "0.1",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines: list[str] = []
        wait_until(lambda: lines.append(process.stdout.readline()) or "Ctrl+C" in lines[-1] or process.poll() is not None, 90, "the banner")
        assert process.poll() is None, "".join(lines)
        assert litkit.Client(ray_serve).predict({"name": "ray"}) == {"hello": "ray"}
    finally:
        process.send_signal(2)
        process.wait(timeout=60)
        process.stdout.close()
    assert process.returncode == 0


def test_a_serve_yaml_config_deploys_a_ray_app(ray_serve, tmp_path: Path):
    """Serve's own ``serve run config.yaml`` with ``import_path: module:app``; the YAML's deployment
    options override ``ray_app``'s (here: the replica's CPUs)."""
    (tmp_path / "hello_app.py").write_text(textwrap.dedent("""
        import litkit

        class Hello(litkit.LitAPI):
            def predict(self, x):
                return {"hello": x["name"]}

        app = litkit.ray_app(Hello(), ray_actor_options={"num_cpus": 4})  # too big: the YAML overrides it
    """))
    (tmp_path / "config.yaml").write_text(textwrap.dedent(f"""
        applications:
          - name: yaml
            route_prefix: /yaml
            import_path: hello_app:app
            runtime_env: {{working_dir: "local://{tmp_path}"}}
            deployments:
              - name: Hello
                ray_actor_options: {{num_cpus: 0.1}}
    """))
    from ray import serve

    serve_command = os.path.join(os.path.dirname(sys.executable), "serve")
    address = ray.get_runtime_context().gcs_address
    deploy = [serve_command, "run", "--address", address, "--non-blocking", str(tmp_path / "config.yaml")]
    run = subprocess.run(deploy, capture_output=True, text=True, timeout=120)
    try:
        assert run.returncode == 0, run.stderr[-2000:]
        wait_until(lambda: getattr(serve.status().applications.get("yaml"), "status", None) == "RUNNING", 60, "the YAML application to run")
        assert litkit.Client(ray_serve + "/yaml").predict({"name": "yaml"}) == {"hello": "yaml"}
    finally:
        serve.delete("yaml", _blocking=False)


def test_the_benchmark_runs(ray_serve):
    """benchmarks/ray_backend.py in its smallest form, on this module's Ray (speed is never asserted
    here: this only proves the instrument works)."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "ray_backend.py"
    address = ray.get_runtime_context().gcs_address
    command = [sys.executable, str(script), "--requests", "8", "--rounds", "1", "--hangups", "1", "--address", address, "--num-cpus", "0.05"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| p50_ms |" in run.stdout and "| async_20ms_finally_max_ms |" in run.stdout
