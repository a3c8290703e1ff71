"""Worker processes: spawned fresh, set up once, failures reported, gone when the server is."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest
import requests

import apis
import litkit
from conftest import ChunkReader, assert_no_children, children, raw_post, wait_until

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/, where apis.py is


def test_setup_runs_once_in_each_spawned_worker(serve, events):
    server = serve(apis.Echo(events.path), workers=2)
    for i in range(6):
        server.predict({"i": i})
    setups = events.named("setup")
    worker_pids = {w["pid"] for w in server.status()["workers"]}
    assert len(setups) == 2
    assert {e["pid"] for e in setups} == worker_pids
    assert {e["device"] for e in setups} == {"cpu"}
    for pid in worker_pids:  # fresh interpreters running litkit.worker, never forks of this process
        command = psutil.Process(pid).cmdline()
        assert command[:3] == [sys.executable, "-m", "litkit.worker"]


def test_worker_imports_neither_tornado_nor_ipywidgets(serve):
    # Nor asyncio, for a plain (sync) API: it would cost every worker memory and start-up time.
    server = serve(apis.Echo())
    assert server.predict({"modules": True}) == {"modules": []}


def test_importing_the_worker_side_loads_no_http_or_widget_stack():
    code = "import sys, litkit, litkit.worker; print(sorted(m for m in ('tornado', 'ipywidgets') if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True).stdout
    assert output.strip() == "[]"


def test_importing_the_server_side_loads_no_widget_stack():
    """ipywidgets loads only when a dashboard is asked for (server.widget, or display in Jupyter)."""
    code = (
        "import sys, litkit, litkit.server, litkit.pool.logs, litkit.server.links, litkit.notebook.formatting, litkit.cli\n"
        "print(sorted(m for m in ('ipywidgets', 'litkit.notebook.dashboard', 'IPython') if m in sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True).stdout
    assert output.strip() == "[]"


def test_setup_raising_is_a_worker_start_error_with_the_traceback():
    started = time.monotonic()
    with pytest.raises(litkit.WorkerStartError) as raised:
        litkit.serve(apis.FailingSetup("raise"), port=0, workers=2)
    error = raised.value
    assert "FailingSetup.setup('cpu') raised RuntimeError: model weights not found" in str(error)
    assert "Traceback" in error.worker_traceback
    assert "in setup" in error.worker_traceback
    assert "RuntimeError: model weights not found at /nowhere/model.bin" in error.worker_traceback
    assert time.monotonic() - started < 10
    assert_no_children()


def test_worker_dying_while_starting_is_a_worker_start_error():
    with pytest.raises(litkit.WorkerStartError, match="exited with code 3 before it was ready"):
        litkit.serve(apis.FailingSetup("exit"), port=0)
    assert_no_children()


def test_start_timeout_is_enforced_and_leaves_no_process():
    started = time.monotonic()
    with pytest.raises(litkit.WorkerStartError, match=r"no READY within start_timeout=1s.*pass a larger start_timeout"):
        litkit.serve(apis.FailingSetup("hang"), port=0, start_timeout=1)
    assert time.monotonic() - started < 6  # 1 s, plus SIGTERM after the stop grace
    assert_no_children()


def test_an_api_cloudpickle_cannot_serialize_fails_before_any_spawn():
    api = apis.Echo()
    api.lock = threading.Lock()
    before = len(children())
    with pytest.raises(TypeError, match=r"cannot send the Echo object to worker processes.*create them in setup\(\)"):
        litkit.serve(api, port=0)
    assert len(children()) == before


def test_serve_rejects_what_is_not_an_api_instance():
    with pytest.raises(TypeError, match=r"call it: serve\(Doubler\(\)\)"):
        litkit.serve(apis.Doubler, port=0)
    with pytest.raises(TypeError, match="litkit.LitAPI instance"):
        litkit.serve(object(), port=0)
    with pytest.raises(ValueError, match="workers must be an int from 1"):
        litkit.serve(apis.Doubler(), port=0, workers=0)


def test_a_worker_that_dies_mid_request_answers_500_and_is_replaced(serve):
    server = serve(apis.Echo())
    old_pid = server.status()["workers"][0]["pid"]
    started = time.monotonic()
    response = requests.post(server.url + "/predict", json={"exit": 7}, timeout=10)
    assert response.status_code == 500
    assert time.monotonic() - started < 1.0
    assert f"worker 0 (pid {old_pid}) died while handling this request" in response.json()["error"]
    wait_until(lambda: server.status()["workers"][0]["restarts"] == 1 and server.status()["workers"][0]["state"] == "idle", message="a replacement worker")
    assert server.predict({"pid": True})["pid"] != old_pid
    assert server.status()["counts"]["failed"] == 1


def test_a_request_waiting_behind_a_crash_is_served_by_the_replacement(serve, events, tmp_path):
    # The busy worker already holds the next request (it prefetches one); the crash must not take it along.
    server = serve(apis.Echo(events.path), workers=1)
    release = tmp_path / "release"
    doomed = raw_post(server.url, json.dumps({"tag": "A", "wait_for": str(release), "exit": 3}).encode())
    events.wait_for("request")
    waiting = raw_post(server.url, json.dumps({"tag": "B"}).encode())
    wait_until(lambda: server.status()["counts"]["queued"] == 1, message="B to wait for the worker")
    release.touch()
    crashed, served = ChunkReader(doomed), ChunkReader(waiting)
    assert crashed.status == 500
    assert served.status == 200
    assert json.loads(served.body()) == {"echo": {"tag": "B"}}
    for reader, sock in ((crashed, doomed), (served, waiting)):
        reader.close()
        sock.close()
    assert [e["tag"] for e in events.named("request")] == ["A", "B"]
    counts = server.status()["counts"]
    assert (counts["completed"], counts["failed"], counts["queued"], counts["running"]) == (1, 1, 0, 0)


_ORPHAN_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading, time
    sys.path.insert(0, {tests!r})
    import cloudpickle, apis, litkit
    cloudpickle.register_pickle_by_value(apis)
    servers = []
    # Serve from a thread that exits at once: workers must not depend on it.
    starter = threading.Thread(target=lambda: servers.append(litkit.serve(apis.Echo({events!r}), port=0, workers=2)))
    starter.start(); starter.join()
    server = servers[0]
    print("READY " + json.dumps({{"url": server.url, "pids": [w["pid"] for w in server.status()["workers"]]}}), flush=True)
    time.sleep(60)
    """
)


def test_workers_exit_within_2s_when_the_serving_process_is_killed(tmp_path, events):
    script = tmp_path / "serving.py"
    script.write_text(_ORPHAN_SCRIPT.format(tests=TESTS, events=events.path))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        # serve() prints a progress line first when its workers take over a second to start.
        line = ""
        while not line.startswith("READY ") and process.poll() is None:
            line = process.stdout.readline()
        ready = json.loads(line.removeprefix("READY "))
        # Keep one worker inside a hook that never checks litkit.cancelled().
        busy = raw_post(ready["url"], json.dumps({"tag": "busy", "wait_for": str(tmp_path / "never")}).encode())
        events.wait_for("request")
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        killed = time.monotonic()

        def all_gone():
            for pid in ready["pids"]:
                try:
                    if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                        return False
                except psutil.NoSuchProcess:
                    pass
            return True

        wait_until(all_gone, deadline_s=5, message="the orphaned workers to exit")
        assert time.monotonic() - killed < 2.0
        busy.close()
    finally:
        process.kill()
        process.wait(10)
        process.stdout.close()


_LIST_HELD_FDS = (
    "import json, os\n"
    "held = []\n"
    "for name in os.listdir('/proc/self/fd'):\n"
    "    try:\n"
    "        held.append(os.readlink(f'/proc/self/fd/{name}') if int(name) > 2 else '')\n"
    "    except OSError:\n"
    "        pass\n"
    "print(json.dumps([target for target in held if target.startswith(('pipe:', 'socket:'))]))\n"
)


class _SpawnsChild(litkit.LitAPI):
    """predict starts a subprocess with close_fds=False and returns the pipes and sockets it holds."""

    def predict(self, x):
        import json
        import subprocess
        import sys

        child = subprocess.run([sys.executable, "-c", x["code"]], close_fds=False, capture_output=True, text=True, timeout=30, check=True)
        return {"held": json.loads(child.stdout)}


class _SpawnsChildBatched(_SpawnsChild):
    def predict(self, batch):
        return [super(_SpawnsChildBatched, self).predict(x) for x in batch]


class _SpawnsChildAsync(_SpawnsChild):
    async def predict(self, x):
        return _SpawnsChild.predict(self, x)


@pytest.mark.parametrize(
    "api, options",
    [(_SpawnsChild(), {}), (_SpawnsChildBatched(), {"max_batch_size": 2, "batch_timeout": 0.01}), (_SpawnsChildAsync(), {})],
    ids=["sync", "batched", "async"],
)
def test_a_hooks_subprocess_holds_neither_the_response_pipe_nor_the_control_socket(serve, api, options):
    """Descriptors a worker receives are close-on-exec (MSG_CMSG_CLOEXEC): a child a hook starts,
    even with close_fds=False, cannot keep a request's pipe open after the worker closes it."""
    server = serve(api, **options)
    assert server.predict({"code": _LIST_HELD_FDS}) == {"held": []}


def test_a_hooks_threads_may_ask_cancelled_at_the_same_time():
    """Regression: each request's channel polls one ``select.poll`` object, and two threads polling
    it at once made ``litkit.cancelled()`` raise RuntimeError("concurrent poll() invocation")."""
    from litkit.cancellation import _set_current
    from litkit.worker.main import ResponseChannel

    read_fd, write_fd = os.pipe()
    channel = ResponseChannel(write_fd)
    answers: list[object] = []

    def ask() -> None:
        try:
            answers.extend({litkit.cancelled() for _ in range(20_000)})
        except Exception as error:  # noqa: BLE001 - collected for the assertion below
            answers.append(error)

    _set_current(channel)
    try:
        threads = [threading.Thread(target=ask) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert answers == [False] * 4
        os.close(read_fd)  # the server closes its end: every thread sees it
        assert litkit.cancelled()
    finally:
        _set_current(None)
        channel.close()


CELL = '''\
import litkit

class CellAPI(litkit.LitAPI):
    def predict(self, x):
        return helper(x)

def helper(x):
    raise ValueError(f"bad input {x!r}")
'''


def test_a_hook_s_traceback_shows_the_source_lines_of_a_notebook_cell(serve, caplog):
    """Regression (issue 14, a new user's rough edges): tracebacks of classes from a cell or
    ``__main__`` read ``File "<dynamic-code>"`` with no source. The cell is made the way ipykernel
    makes one: compiled under a file name that exists nowhere, its lines only in ``linecache``, its
    class in ``__main__`` (so cloudpickle sends it by value)."""
    import linecache

    filename = "/tmp/ipykernel_0/1234567890.py"
    linecache.cache[filename] = (len(CELL), None, CELL.splitlines(True), filename)
    namespace = {"__name__": "__main__"}
    exec(compile(CELL, filename, "exec"), namespace)
    try:
        server = serve(namespace["CellAPI"]())
        caplog.set_level(logging.ERROR, logger="litkit.server")
        response = requests.post(server.url + "/predict", json={"a": 1}, timeout=10)
        assert response.status_code == 500
        # The server's interpreter or process forwards the record after the 500 went out.
        logged = wait_until(
            lambda: (lambda text: text if "in helper" in text else None)("\n".join(r.getMessage() for r in caplog.records if r.name == "litkit.server")),
            message="the hook's traceback in the log",
        )
        assert "<dynamic-code>" not in logged, logged
        assert f'File "{filename}", line 5, in predict\n    return helper(x)' in logged, logged
        assert f'File "{filename}", line 8, in helper\n    raise ValueError(f"bad input {{x!r}}")' in logged, logged
    finally:
        linecache.cache.pop(filename, None)


def test_a_start_failure_is_the_message_then_the_user_s_traceback_without_litkit_frames():
    """Regression (issue 14): a WorkerStartError in a notebook was 80 lines, 9 of litkit's frames
    before the message, and the worker's traceback began in litkit's worker loop."""
    import traceback

    with pytest.raises(litkit.WorkerStartError) as raised:
        litkit.serve(apis.FailingSetup(), port=0)
    frames = traceback.extract_tb(raised.value.__traceback__)
    assert [frame.name for frame in frames] == ["test_a_start_failure_is_the_message_then_the_user_s_traceback_without_litkit_frames", "serve"]
    text = str(raised.value)
    assert text.startswith("worker 0 failed to start: FailingSetup.setup('cpu') raised RuntimeError: model weights not found")
    worker_part = text.split("Traceback from the worker process:\n", 1)[1]
    assert "litkit" + os.sep + "worker" not in worker_part, worker_part
    assert 'line ' in worker_part and "in setup" in worker_part
