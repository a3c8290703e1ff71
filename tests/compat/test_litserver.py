"""LitServe code under ``import litkit as ls``: ``ls.LitServer(...).run(...)`` over real HTTP.

Each test is written as LitServe's docs write it; the server is litkit's, on a free port, with real
spawned workers. ``run()`` blocks outside Jupyter, so the in-process tests run it on a thread and
stop it through the ``Server`` it started; one test runs a script in its own interpreter.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import signal
import subprocess
import sys
import textwrap
from typing import Any

import cloudpickle
import psutil
import pytest
import requests

import litkit
import litkit as ls
import litserve_apis as apis
from runner import run  # noqa: F401 - the fixture
from conftest import litkit_threads, wait_until

cloudpickle.register_pickle_by_value(apis)


def post(server: litkit.Server, path: str, body: Any, **kwargs: Any) -> requests.Response:
    return requests.post(server.url + path, json=body, timeout=10, **kwargs)


def test_readme_example_runs_unchanged_but_for_the_import(run):
    server = run(ls.LitServer(apis.SimpleLitAPI(), accelerator="auto", devices=1, workers_per_device=2, timeout=30))
    answer = post(server, "/predict", {"input": 4.0})
    assert (answer.status_code, answer.json()) == (200, {"output": 16.0})
    assert len(server.status()["workers"]) == 2


def test_a_list_of_apis_each_at_its_api_path(run):
    server = run(ls.LitServer([apis.SimpleLitAPI(api_path="/square"), apis.Cube(api_path="/cube")]))
    assert post(server, "/square", {"input": 3}).json() == {"output": 9}
    assert post(server, "/cube", {"input": 3}).json() == {"output": 27}


def test_a_dict_of_apis_by_path(run):
    server = run(ls.LitServer({"/square": apis.SimpleLitAPI(), "/cube": apis.Cube()}, workers_per_device={"/cube": 2}))
    assert post(server, "/cube", {"input": 2}).json() == {"output": 8}
    assert {e["path"]: len(e["workers"]) for e in server.status()["endpoints"]} == {"/square": 1, "/cube": 2}


def test_two_apis_on_one_path_are_refused():
    with pytest.raises(ValueError, match="several APIs use the path /predict"):
        ls.LitServer([apis.SimpleLitAPI(), apis.Cube()])


def test_batching_options_on_the_api_object(run):
    server = run(ls.LitServer(apis.BatchSizes(max_batch_size=4, batch_timeout=0.5)))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: post(server, "/predict", {"input": i}).json(), range(4)))
    assert max(answer["batch_size"] for answer in answers) > 1


def test_the_older_batching_arguments_on_the_server(run):
    with pytest.warns(DeprecationWarning, match="pass max_batch_size and batch_timeout to ls.LitAPI"):
        lit_server = ls.LitServer(apis.BatchSizes(), max_batch_size=4, batch_timeout=0.5)
    server = run(lit_server)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda i: post(server, "/predict", {"input": i}).json(), range(4)))
    assert max(answer["batch_size"] for answer in answers) > 1


def test_stream_true_streams_each_chunk(run):
    server = run(ls.LitServer(apis.StreamingAPI(stream=True)))
    with requests.post(server.url + "/predict", json={"n": 3}, stream=True, timeout=10) as answer:
        chunks = [json.loads(line) for line in answer.iter_lines() if line]
    assert chunks == [{"output": 0}, {"output": 1}, {"output": 2}]  # one JSON line each, as LitServe sends


def test_litkit_serve_honours_the_api_objects_options_and_refuses_a_conflict(serve):
    server = serve(apis.SimpleLitAPI(api_path="/square"))
    assert server.api_path == "/square"
    assert server.predict({"input": 5}, path="/square") == {"output": 25}
    with pytest.raises(ValueError, match="made with max_batch_size=4 but is served with max_batch_size=2"):
        serve(apis.BatchSizes(max_batch_size=4), max_batch_size=2)


@pytest.mark.parametrize("api_class", [apis.RequestAuth, apis.BearerAuth], ids=["authorize(request)", "Depends(HTTPBearer())"])
def test_authorize_hook_refuses_a_wrong_token(run, api_class):
    """The bug this pins: a LitServe API's authorize() was ignored, so a wrong token got 200."""
    server = run(ls.LitServer(api_class()))
    wrong = post(server, "/predict", {"input": 2}, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401
    assert wrong.json()["detail"] == "Bad token"  # LitServe's body, beside litkit's "error"
    assert post(server, "/predict", {"input": 2}).status_code == 401
    right = post(server, "/predict", {"input": 2}, headers={"Authorization": "Bearer 1234"})
    assert (right.status_code, right.json()) == (200, {"output": 4})


def test_lit_server_api_key_is_required(run, monkeypatch):
    """The bug this pins: LIT_SERVER_API_KEY was ignored, so a request without the key got 200."""
    monkeypatch.setenv("LIT_SERVER_API_KEY", "a-key-of-some-length-1234")
    server = run(ls.LitServer(apis.SimpleLitAPI()))
    assert post(server, "/predict", {"input": 2}).status_code == 401
    assert post(server, "/predict", {"input": 2}, headers={"X-API-Key": "wrong-key-of-some-length"}).status_code == 401
    right = post(server, "/predict", {"input": 2}, headers={"X-API-Key": "a-key-of-some-length-1234"})
    assert (right.status_code, right.json()) == (200, {"output": 4})


def test_a_short_api_key_or_a_key_beside_authorize_is_an_error(monkeypatch):
    monkeypatch.setenv("LIT_SERVER_API_KEY", "1234")
    with pytest.raises(ValueError, match="LIT_SERVER_API_KEY: api_key must be at least 16 characters"):
        ls.LitServer(apis.SimpleLitAPI())
    monkeypatch.setenv("LIT_SERVER_API_KEY", "a-key-of-some-length-1234")
    with pytest.raises(ValueError, match="LitServe would check only authorize"):
        ls.LitServer(apis.RequestAuth())


def test_binding_every_address_needs_a_key():
    with pytest.raises(ValueError, match="LIT_SERVER_API_KEY"):
        ls.LitServer(apis.SimpleLitAPI()).run(host="0.0.0.0", port=0, generate_client_file=False)
    assert not litkit_threads()


def test_an_api_with_authorize_may_bind_every_address(run):
    server = run(ls.LitServer(apis.RequestAuth()), host="0.0.0.0")
    assert post(server, "/predict", {"input": 3}).status_code == 401
    assert post(server, "/predict", {"input": 3}, headers={"Authorization": "Bearer 1234"}).json() == {"output": 9}


def test_timeout_is_the_wait_in_the_queue(run):
    """LitServe's timeout: a request that waits longer than it for a worker gets 504; one that
    a worker took in time may run longer."""
    server = run(ls.LitServer(apis.Slow(), timeout=0.3))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(post, server, "/predict", {"seconds": 1.0})
        wait_until(lambda: server.status()["counts"]["running"] == 1, message="the first request to run")
        second = pool.submit(post, server, "/predict", {"seconds": 0.01})
        assert first.result().status_code == 200  # ran for 1 s, past the 0.3 s timeout
        late = second.result()
    assert late.status_code == 504
    assert "waited in the queue for more than queue_timeout=0.3s" in late.json()["detail"]


@pytest.mark.parametrize("off", [False, -1])
def test_timeout_false_or_minus_one_turns_it_off(run, off):
    server = run(ls.LitServer(apis.Slow(), timeout=off))
    assert server.endpoint_info("/predict")["queue_timeout"] is None
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda s: post(server, "/predict", {"seconds": s}), (0.4, 0.01)))
    assert [answer.status_code for answer in answers] == [200, 200]


def test_fastapi_http_exception_keeps_its_status(run):
    server = run(ls.LitServer(apis.RefusesOdd()))
    refused = post(server, "/predict", {"input": 3})
    assert refused.status_code == 422
    assert refused.json()["detail"] == "input must be even"
    assert post(server, "/predict", {"input": 4}).json() == {"output": 16}


def test_max_payload_size(run):
    server = run(ls.LitServer(apis.SimpleLitAPI(), max_payload_size="1KB"))
    assert post(server, "/predict", {"input": 1, "pad": "x" * 2000}).status_code == 413
    assert post(server, "/predict", {"input": 1}).status_code == 200


def test_generate_client_file_writes_a_client_that_works(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    server = run(ls.LitServer(apis.SimpleLitAPI()), generate_client_file=True)
    client = tmp_path / "client.py"
    assert client.exists()
    result = subprocess.run([sys.executable, str(client)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert '{"output":16.0}' in result.stdout
    assert server.url in client.read_text()


def test_track_requests_counts_the_active_requests(run):
    lit_server = ls.LitServer(apis.Slow(), track_requests=True)
    server = run(lit_server)
    assert lit_server.active_requests == 0
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(post, server, "/predict", {"seconds": 0.5})
        wait_until(lambda: lit_server.active_requests == 1, message="one active request")
        assert answer.result().status_code == 200
    assert lit_server.active_requests == 0


@pytest.mark.parametrize(
    "arguments, named",
    [
        ({"middlewares": [object]}, "middlewares=[object]"),
        ({"enable_shutdown_api": True}, "enable_shutdown_api"),
        ({"accelerator": "mps"}, "accelerator='mps'"),
        ({"loop": object()}, "loop"),
    ],
)
def test_each_unsupported_argument_is_a_type_error_naming_it(arguments, named):
    with pytest.raises(TypeError, match=re.escape(f"LitServer({named}")) as raised:
        ls.LitServer(apis.SimpleLitAPI(), **arguments)
    assert "migrating-from-litserve.md" in str(raised.value)


@pytest.mark.parametrize("arguments", [{"callbacks": [object()]}, {"loggers": [object()]}], ids=["callbacks", "loggers"])
def test_callbacks_and_loggers_must_be_litserves_classes(arguments):
    with pytest.raises(ValueError, match="must be ls.(Callback|Logger) instances"):
        ls.LitServer(apis.SimpleLitAPI(), **arguments)


@pytest.mark.parametrize(
    "arguments, named",
    [({"num_api_servers": 2}, "num_api_servers"), ({"api_server_worker_type": "process"}, "api_server_worker_type"), ({"pretty_logs": True}, "pretty_logs"), ({"workers": 4}, "workers")],
)
def test_each_unsupported_run_argument_is_a_type_error_naming_it(arguments, named):
    with pytest.raises(TypeError, match=named):
        ls.LitServer(apis.SimpleLitAPI()).run(port=0, generate_client_file=False, **arguments)
    assert not litkit_threads()


@pytest.mark.parametrize("arguments, named", [({"mcp": object()}, "mcp"), ({"loop": object()}, "loop")])
def test_unsupported_litapi_options_are_type_errors(arguments, named):
    with pytest.raises(TypeError, match=f"{named}="):
        apis.SimpleLitAPI(**arguments)


def test_enable_async_needs_an_async_predict():
    with pytest.raises(ValueError, match="enable_async=True but SimpleLitAPI.predict is a plain function"):
        apis.SimpleLitAPI(enable_async=True)


def test_run_blocks_in_a_script_until_interrupted(tmp_path):
    """A LitServe script: run() blocks; Ctrl+C stops the server and its workers."""
    script = tmp_path / "server.py"
    script.write_text(
        textwrap.dedent(
            """
            import litkit as ls

            class SimpleLitAPI(ls.LitAPI):
                def setup(self, device):
                    self.model = lambda x: x**2
                def decode_request(self, request):
                    return request["input"]
                def predict(self, x):
                    return self.model(x)
                def encode_response(self, output):
                    return {"output": output}

            if __name__ == "__main__":
                server = ls.LitServer(SimpleLitAPI(), accelerator="auto", max_batch_size=1)
                server.run(port=0, generate_client_file=False)
                print("run() returned", flush=True)
            """
        )
    )
    process = subprocess.Popen([sys.executable, "-W", "ignore::DeprecationWarning", str(script)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        banner = process.stdout.readline()
        url = re.search(r"at (http://\S+?)/predict", banner).group(1)
        assert requests.post(url + "/predict", json={"input": 3}, timeout=10).json() == {"output": 9}
        assert process.poll() is None  # still serving: run() blocks
        # The script runs nothing else: it serves from a thread of its own, its only children are workers.
        assert [child.cmdline()[1:3] for child in psutil.Process(process.pid).children()] == [["-m", "litkit.worker"]]
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0, output
    assert "litkit: stopped" in output and "run() returned" in output


def test_run_returns_the_server_at_once_in_a_jupyter_kernel(tmp_path):
    """In a kernel, run() returns the litkit Server, so the next cell can call it; then it stops."""
    import nbformat
    from nbclient import NotebookClient

    cells = [
        """
        import litkit as ls, requests

        class SimpleLitAPI(ls.LitAPI):
            def setup(self, device):
                self.model = lambda x: x**2
            def decode_request(self, request):
                return request["input"]
            def predict(self, x):
                return self.model(x)
            def encode_response(self, output):
                return {"output": output}

        server = ls.LitServer(SimpleLitAPI(), accelerator="auto").run(port=0, generate_client_file=False)
        print("returned:", type(server).__name__, server.state)
        """,
        """
        print("answer:", requests.post(server.url + "/predict", json={"input": 5}, timeout=10).json())
        server.stop()
        print("state:", server.state)
        """,
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(textwrap.dedent(cell)) for cell in cells])
    NotebookClient(notebook, timeout=60, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(output.get("text", "") for cell in notebook.cells for output in cell.outputs if output.output_type == "stream")
    assert "returned: Server serving" in printed
    assert "answer: {'output': 25}" in printed
    assert "state: stopped" in printed


def test_cors_middleware_becomes_cors_origins(run):
    from fastapi.middleware.cors import CORSMiddleware

    server = run(ls.LitServer(apis.SimpleLitAPI(), middlewares=[(CORSMiddleware, {"allow_origins": ["http://app.example"], "allow_methods": ["POST"]})]))
    allowed = post(server, "/predict", {"input": 2}, headers={"Origin": "http://app.example"})
    assert (allowed.status_code, allowed.headers["Access-Control-Allow-Origin"]) == (200, "http://app.example")
    assert post(server, "/predict", {"input": 2}, headers={"Origin": "http://evil.example"}).status_code == 403


@pytest.mark.parametrize("options, named", [({"allow_headers": ["*"]}, "allow_headers"), ({"allow_credentials": True}, "allow_credentials")])
def test_cors_middleware_options_litkit_cannot_honour_are_refused(options, named):
    from fastapi.middleware.cors import CORSMiddleware

    with pytest.raises(TypeError, match=named):
        ls.LitServer(apis.SimpleLitAPI(), middlewares=[(CORSMiddleware, {"allow_origins": ["*"], **options})])


def test_other_middlewares_are_refused_naming_them():
    from starlette.middleware.gzip import GZipMiddleware

    with pytest.raises(TypeError, match=r"middlewares=\[GZipMiddleware\].*only Starlette's CORSMiddleware"):
        ls.LitServer(apis.SimpleLitAPI(), middlewares=[(GZipMiddleware, {"minimum_size": 1000})])


def test_litserve_names_litkit_lacks_say_what_to_use():
    with pytest.raises(AttributeError, match=r"litkit has no Request \(LitServe's ls.Request\)"):
        ls.Request  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'Nonexistent'"):
        ls.Nonexistent  # noqa: B018


# LitServe 0.2.19's signatures (read from its wheel): every name must be taken, in LitServe's order
# for the positional ones, so that no LitServe call fails with Python's bare "unexpected keyword".
LITSERVE_LITSERVER = (
    "lit_api", "accelerator", "devices", "workers_per_device", "timeout", "healthcheck_path", "info_path", "shutdown_path",
    "enable_shutdown_api", "model_metadata", "spec", "max_payload_size", "track_requests", "callbacks", "middlewares", "loggers",
    "fast_queue", "disable_openapi_url", "max_batch_size", "batch_timeout", "stream", "api_path", "loop", "restart_workers",
)
LITSERVE_RUN = ("host", "port", "num_api_servers", "log_level", "generate_client_file", "api_server_worker_type", "pretty_logs")
LITSERVE_LITAPI = ("max_batch_size", "batch_timeout", "api_path", "stream", "loop", "spec", "mcp", "enable_async")


def test_every_litserve_argument_has_a_place():
    import inspect

    assert tuple(inspect.signature(ls.LitServer).parameters) == LITSERVE_LITSERVER
    assert tuple(inspect.signature(ls.LitServer.run).parameters)[1:-1] == LITSERVE_RUN
    assert set(inspect.signature(ls.LitAPI).parameters) == set(LITSERVE_LITAPI)


def test_model_metadata_is_in_info(run):
    server = run(ls.LitServer(apis.SimpleLitAPI(), model_metadata={"name": "square", "version": "1.0"}))
    info = requests.get(server.url + "/info", timeout=10).json()
    assert info["model"] == {"name": "square", "version": "1.0"}
    with pytest.raises(ValueError, match="model_metadata must be JSON serializable"):
        ls.LitServer(apis.SimpleLitAPI(), model_metadata={"f": object()})


def test_a_litserve_stream_stops_when_its_client_leaves(run, tmp_path):
    """Where litkit is better: LitServe code's generator is closed (its finally runs) on disconnect."""
    marker = tmp_path / "stopped"
    server = run(ls.LitServer(apis.EndlessStream(str(marker), stream=True)))
    with requests.post(server.url + "/predict", json={}, stream=True, timeout=10) as answer:
        lines = answer.iter_lines()
        assert json.loads(next(lines)) == {"output": "token"}
    wait_until(marker.exists, message="the generator's finally after the client left")
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the request counted cancelled")


def test_batch_timeout_without_max_batch_size_is_an_error():
    """LitServe 0.2.19 drops LitServer(batch_timeout=...) given alone; litkit says so instead."""
    with pytest.raises(ValueError, match="does nothing without max_batch_size"):
        ls.LitServer(apis.SimpleLitAPI(), batch_timeout=0.5)


def test_get_root_says_litserve_running_to_clients_and_shows_the_page_to_browsers(run):
    """LitServe answers GET / with the text 'litserve running', which clients check; litkit's page
    at / (issue 23) must not take that from them: only a request that asks for HTML gets the page."""
    server = run(ls.LitServer(apis.SimpleLitAPI()))
    plain = requests.get(server.url + "/", timeout=10)
    assert (plain.status_code, plain.text, plain.headers["Content-Type"]) == (200, "litserve running", "text/plain; charset=utf-8")
    browser = requests.get(server.url + "/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}, timeout=10)
    assert browser.status_code == 200 and browser.headers["Content-Type"].startswith("text/html") and "<!doctype html>" in browser.text
    # litkit.serve() has no such text: its / is the page for every client.
    with litkit.serve(apis.SimpleLitAPI(), port=0) as plain_server:
        assert requests.get(plain_server.url + "/", timeout=10).headers["Content-Type"].startswith("text/html")


def test_disable_openapi_url_turns_off_the_document_and_the_page(run):
    """LitServer(disable_openapi_url=True) was accepted and had nothing to turn off; with the page and
    /openapi.json (issue 23) it must turn both off, as LitServe turns off FastAPI's /docs and /openapi.json."""
    server = run(ls.LitServer(apis.SimpleLitAPI(), disable_openapi_url=True))
    assert requests.get(server.url + "/openapi.json", timeout=10).status_code == 404
    assert requests.get(server.url + "/docs", timeout=10).status_code == 404
    browser = requests.get(server.url + "/", headers={"Accept": "text/html"}, timeout=10)
    assert (browser.status_code, browser.text) == (200, "litserve running")
    assert post(server, "/predict", {"input": 3}).json() == {"output": 9}
