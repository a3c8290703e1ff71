"""Where the server's loop runs (litkit/server/host.py): in a sub-interpreter with its own GIL on
Python 3.13+, else in a process of its own; on a thread with a short GIL switch interval when
asked; and what each gives back on stop."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time

import apis
import psutil
import pytest
import requests
from conftest import DEADLINE_S, next_line_after_startup, wait_until

import litkit
from litkit.server import switching
from litkit.server.interpreters import unavailable_reason

SUBINTERPRETERS = sys.version_info >= (3, 13)


def _running_interpreters() -> list[int]:
    """The ids of the sub-interpreters running code now (the main one left out)."""
    import _interpreters  # type: ignore[import-not-found]

    main = _interpreters.get_main()[0]
    return [id_ for id_, _ in _interpreters.list_all() if id_ != main and _interpreters.is_running(id_)]


@pytest.mark.skipif(not SUBINTERPRETERS, reason="sub-interpreters with their own GIL need Python 3.13+")
def test_the_server_runs_in_a_sub_interpreter_of_its_own_and_leaves_it_on_stop(monkeypatch):
    monkeypatch.delenv("LITKIT_SUBINTERPRETER", raising=False)
    assert _running_interpreters() == []
    server = litkit.serve(apis.Echo(), port=0)
    try:
        assert len(_running_interpreters()) == 1
        assert sys.getswitchinterval() == pytest.approx(0.005)  # its own GIL: this one is left alone
        assert server.predict({"x": 1}) == {"echo": {"x": 1}}
    finally:
        server.stop()
    assert _running_interpreters() == []
    assert server.status()["state"] == "stopped"  # the final figures stay readable


def _rss_after_trim() -> int:
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return psutil.Process().memory_info().rss


@pytest.mark.skipif(not SUBINTERPRETERS, reason="sub-interpreters with their own GIL need Python 3.13+")
def test_rerunning_serve_and_stop_does_not_grow_memory(monkeypatch):
    # CPython 3.13.0 keeps about 12 MiB of a sub-interpreter that served when it is destroyed:
    # eight serve()/stop() rounds grew this process by about 100 MiB before the server's
    # interpreter was kept for the next one.
    monkeypatch.delenv("LITKIT_SUBINTERPRETER", raising=False)
    litkit.serve(apis.Echo(), port=0, workers=1).stop()  # a warm-up: the first round imports
    before = _rss_after_trim()
    for _ in range(8):
        server = litkit.serve(apis.Echo(), port=0, workers=1)
        assert server.predict({"x": 1}) == {"echo": {"x": 1}}
        server.stop()
    grown = _rss_after_trim() - before
    assert grown < 24 * 2**20, f"8 serve()/stop() rounds grew this process by {grown / 2**20:.1f} MiB"


@pytest.mark.skipif(not SUBINTERPRETERS, reason="sub-interpreters with their own GIL need Python 3.13+")
def test_a_kept_interpreter_forgets_the_modules_its_server_imported(tmp_path, monkeypatch):
    from litkit.server import interpreters

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "litkit_test_recipe_module.py").write_text("VERSION = 1\n")
    with interpreters.borrowed("import json") as interpreter:
        interpreter.run("import sys; sys.path.insert(0, %r)\nimport litkit_test_recipe_module\nassert litkit_test_recipe_module.VERSION == 1" % str(tmp_path))
    (tmp_path / "litkit_test_recipe_module.py").write_text("VERSION = 22\n")  # the user edited it
    with interpreters.borrowed("import json") as again:
        assert again is interpreter
        again.run("import sys, json, litkit_test_recipe_module\nassert litkit_test_recipe_module.VERSION == 22, 'stale module'\nassert 'json' in sys.modules")


@pytest.mark.skipif(not SUBINTERPRETERS, reason="sub-interpreters with their own GIL need Python 3.13+")
def test_a_kept_interpreter_sees_the_callers_environment_as_it_is_now(monkeypatch):
    from litkit.server import interpreters

    monkeypatch.setenv("LITKIT_TEST_SETTING", "before")
    monkeypatch.setenv("LITKIT_TEST_GONE", "1")
    with interpreters.borrowed("import json") as interpreter:
        pass
    monkeypatch.setenv("LITKIT_TEST_SETTING", "after")  # a cell changed them between two serve()s
    monkeypatch.delenv("LITKIT_TEST_GONE")
    with interpreters.borrowed("import json") as again:
        assert again is interpreter
        again.run(
            "import os\nassert os.environ.get('LITKIT_TEST_SETTING') == 'after', os.environ.get('LITKIT_TEST_SETTING')\n"
            "assert 'LITKIT_TEST_GONE' not in os.environ"
        )
    assert os.environ["LITKIT_TEST_SETTING"] == "after"  # and the process's environment is untouched


@pytest.mark.skipif(not SUBINTERPRETERS, reason="sub-interpreters with their own GIL need Python 3.13+")
def test_a_kept_interpreter_frees_what_its_server_left_in_cycles(tmp_path):
    # Destroying the interpreter freed such objects (a socket in a cycle closed then); keeping it must too.
    from litkit.server import interpreters

    freed = tmp_path / "freed"
    with interpreters.borrowed("import json") as interpreter:
        interpreter.run(
            "import gc\ngc.disable()\n"
            "class Held:\n    def __del__(self):\n        open(%r, 'w').close()\n"
            "held = Held(); held.cycle = held; del held\ngc.enable()" % str(freed)
        )
    assert freed.exists()


_CLIENT = """
import json, sys, time, urllib.request
url, seconds = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + seconds
while time.monotonic() < end:
    request = urllib.request.Request(url, data=b'{"x": 1}', headers={"Content-Type": "application/json"})
    answer = json.load(urllib.request.urlopen(request, timeout=60))
    print(json.dumps({"answer": answer, "at": time.monotonic()}), flush=True)
    time.sleep(0.05)
"""


def _long_c_call(seconds: float) -> tuple[float, float]:
    """Hold the GIL inside one C call (catastrophic regex backtracking) for about ``seconds``;
    return when that call began and ended (time.monotonic())."""
    backtracking = re.compile(r"(a+)+$")
    length, took = 16, 0.0
    while took < seconds / 8:  # each extra "a" doubles the time: calibrate on shorter runs
        length += 1
        began = time.perf_counter()
        backtracking.match("a" * length + "b")
        took = time.perf_counter() - began
    began = time.monotonic()
    backtracking.match("a" * (length + 3) + "b")  # about 8x the last one
    return began, time.monotonic()


def test_the_endpoint_answers_while_the_caller_holds_its_gil_in_one_long_c_call(monkeypatch):
    """A cell inside one GIL-holding C call (catastrophic regex backtracking) starves a server on a
    thread of the kernel's interpreter completely; one in its own interpreter (3.13+) or its own
    process (3.10-3.12) answers meanwhile."""
    monkeypatch.delenv("LITKIT_SUBINTERPRETER", raising=False)
    server = litkit.serve(apis.Echo(), port=0)
    client = subprocess.Popen([sys.executable, "-c", _CLIENT, server.url + "/predict", "8"], stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(client.stdout.readline())  # the client is up and answered once
        assert first["answer"] == {"echo": {"x": 1}}
        began, ended = _long_c_call(2.0)
        output = client.communicate(timeout=30)[0]
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(10)
        server.stop()
    answered = [json.loads(line)["at"] for line in output.splitlines()]
    during = [at for at in answered if began < at < ended - 0.5]
    assert len(during) >= 3, f"{len(during)} answers while the caller sat {ended - began:.1f}s in one C call"


def test_a_server_on_a_thread_shortens_the_switch_interval_until_the_last_one_stops(monkeypatch):
    monkeypatch.setenv("LITKIT_SUBINTERPRETER", "0")
    default = sys.getswitchinterval()
    first = litkit.serve(apis.Echo(), port=0)
    second = None
    try:
        assert type(first._host).__name__ == "ThreadHost"
        assert sys.getswitchinterval() == pytest.approx(switching.SWITCH_INTERVAL_S)
        second = litkit.serve(apis.Echo(), port=0)
        first.stop()
        assert sys.getswitchinterval() == pytest.approx(switching.SWITCH_INTERVAL_S)  # one still runs
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert sys.getswitchinterval() == pytest.approx(default)


def test_a_switch_interval_the_user_set_while_serving_is_left_as_it_is(monkeypatch):
    monkeypatch.setenv("LITKIT_SUBINTERPRETER", "0")
    default = sys.getswitchinterval()
    server = litkit.serve(apis.Echo(), port=0)
    try:
        sys.setswitchinterval(0.001)
        server.stop()
        assert sys.getswitchinterval() == pytest.approx(0.001)
    finally:
        server.stop()
        sys.setswitchinterval(default)


def test_the_switch_interval_is_restored_when_serving_fails_to_start(monkeypatch):
    monkeypatch.setenv("LITKIT_SUBINTERPRETER", "0")
    default = sys.getswitchinterval()
    with pytest.raises(litkit.WorkerStartError):
        litkit.serve(apis.FailingSetup("raise"), port=0)
    assert sys.getswitchinterval() == pytest.approx(default)


@pytest.mark.parametrize("value", ["yes", "2", " 1"])
def test_a_bad_litkit_subinterpreter_value_fails_serve_and_names_it(monkeypatch, value):
    monkeypatch.setenv("LITKIT_SUBINTERPRETER", value)
    with pytest.raises(ValueError, match=r"LITKIT_SUBINTERPRETER must be 0 \(serve from a thread\) or 1"):
        litkit.serve(apis.Echo(), port=0)


@pytest.mark.skipif(SUBINTERPRETERS, reason="this Python has sub-interpreters")
def test_asking_for_a_sub_interpreter_where_there_is_none_says_so(monkeypatch):
    monkeypatch.setenv("LITKIT_SUBINTERPRETER", "1")
    with pytest.raises(ValueError, match=r"LITKIT_SUBINTERPRETER=1, but Python .* has no sub-interpreter"):
        litkit.serve(apis.Echo(), port=0)


def test_the_host_is_chosen_by_the_python_version(monkeypatch):
    monkeypatch.delenv("LITKIT_SUBINTERPRETER", raising=False)
    assert (unavailable_reason() is None) == SUBINTERPRETERS
    server = litkit.serve(apis.Echo(), port=0)
    try:
        assert type(server._host).__name__ == ("InterpreterHost" if SUBINTERPRETERS else "ProcessHost")
        assert server._thread.name.startswith("litkit-server-")
    finally:
        server.stop()
    assert not [t for t in threading.enumerate() if t.name.startswith("litkit")]


@pytest.mark.skipif(SUBINTERPRETERS, reason="this Python serves from a sub-interpreter")
def test_the_server_runs_in_a_process_of_its_own_and_ends_it_with_its_workers_on_stop(monkeypatch):
    monkeypatch.delenv("LITKIT_SUBINTERPRETER", raising=False)
    default = sys.getswitchinterval()
    server = litkit.serve(apis.Echo(), port=0, workers=2)
    try:
        server_process = psutil.Process(server._host.process.pid)
        assert server_process.ppid() == os.getpid()
        workers = [psutil.Process(worker["pid"]) for worker in server.status()["workers"]]
        assert [worker.ppid() for worker in workers] == [server_process.pid] * 2
        assert sys.getswitchinterval() == default  # nothing here shares a GIL with it
        assert server.predict({"x": 1}) == {"echo": {"x": 1}}
    finally:
        server.stop()
    assert not server_process.is_running()
    _gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive
    assert server.status()["state"] == "stopped"


@pytest.mark.skipif(SUBINTERPRETERS, reason="this Python serves from a sub-interpreter")
def test_when_the_server_process_dies_the_server_says_so_and_leaves_the_jupyter_route(monkeypatch, tmp_path, caplog):
    """Issue 25, bug 3: when the server's own process died, the kernel's ``Server`` stayed
    "serving", its ``status()`` raised ``RuntimeError``, and its registration file stayed, so litkit's
    Jupyter route went on relaying browsers (with their credentials) to whatever bound the port next."""
    from litkit.wire.registration import REGISTRY_ENV, ROUTE_ENV, registration_path

    monkeypatch.delenv("LITKIT_SUBINTERPRETER", raising=False)
    monkeypatch.setenv(ROUTE_ENV, "/user/ada/litkit")
    monkeypatch.setenv(REGISTRY_ENV, str(tmp_path))
    server = litkit.serve(apis.Echo(), port=0)
    try:
        registration = registration_path(str(tmp_path), server.port)
        assert os.path.exists(registration) and server.predict({"x": 1}) == {"echo": {"x": 1}}
        worker = psutil.Process(server.status()["workers"][0]["pid"])
        server._host.process.kill()
        wait_until(lambda: server.state == "stopped", 10, "the Server to say it stopped")
        wait_until(lambda: not os.path.exists(registration), 10, "the registration file to go")
        status = server.status()  # says so, instead of raising
        assert status["state"] == "stopped" and status["health"]["ok"] is False
        assert "ended without a stop" in status["health"]["reason"] and status["workers"] == []
        psutil.wait_procs([worker], timeout=5)
        assert not worker.is_running()  # it died with the server's process
        with pytest.raises(litkit.ServerStoppedError):
            server.predict({"x": 2})
    finally:
        server.stop()
    wait_until(lambda: not [t for t in threading.enumerate() if t.name.startswith("litkit")], 10, "litkit's threads to end")


_SERVE_AND_WAIT = """
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import apis, litkit
server = litkit.serve(apis.Echo(), port=0)
print(json.dumps({"server": server._host.process.pid, "worker": server.status()["workers"][0]["pid"]}), flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(SUBINTERPRETERS, reason="this Python serves from a sub-interpreter")
def test_the_server_process_and_its_workers_die_with_the_caller(monkeypatch):
    """kill -9 of the notebook's kernel: its server process and the workers end within 2 s."""
    monkeypatch.delenv("LITKIT_SUBINTERPRETER", raising=False)
    caller = subprocess.Popen([sys.executable, "-c", _SERVE_AND_WAIT, os.path.dirname(apis.__file__)], stdout=subprocess.PIPE, text=True)
    try:
        pids = json.loads(next_line_after_startup(caller.stdout))
        processes = [psutil.Process(pids["server"]), psutil.Process(pids["worker"])]
        caller.kill()
        caller.wait(10)
        _gone, alive = psutil.wait_procs(processes, timeout=2)
        assert not alive, f"left behind after kill -9 of the caller: {alive}"
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait(10)
        caller.stdout.close()
        for process in processes if "processes" in locals() else ():
            with contextlib.suppress(psutil.Error):
                process.kill()


def test_access_lines_reach_the_caller_s_logger_at_debug(serve, caplog):
    """``litkit.server.access`` at DEBUG in the caller gives one line per request, wherever the
    server runs: its interpreter or process forwarded only the levels of ``litkit.access``, a
    logger nothing logs to, so raising the real one did nothing under the sub-interpreter and
    process hosts."""
    caplog.set_level(logging.DEBUG, logger="litkit.server.access")
    server = serve(apis.Echo())
    assert requests.post(server.url + "/predict", json={"x": 1}, timeout=DEADLINE_S).status_code == 200
    wait_until(
        lambda: any(r.name == "litkit.server.access" and r.levelno == logging.DEBUG and "POST /predict" in r.getMessage() for r in caplog.records),
        message="the request's access line at DEBUG",
    )


def test_the_server_side_of_the_host_never_imports_the_caller_side():
    """The host boundary is declared in code (issue 22): the server's end of the host socket
    (``host_server``, run in the sub-interpreter or the server's process) and what both ends share
    (``host_boundary``) import nothing of the caller's end (``host``, ``host_caller``), whose
    ``Server``-facing objects must not exist on the server's side."""
    import ast
    import pathlib

    import litkit.server

    folder = pathlib.Path(litkit.server.__file__).parent
    for name in ("host_server", "host_boundary"):
        tree = ast.parse((folder / f"{name}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert imported, f"{name}.py: no imports found; the test reads the wrong file"
        callers = {"host", "host_caller", "litkit.server.host", "litkit.server.host_caller"}
        assert not imported & callers, f"{name}.py imports the caller's side: {sorted(imported & callers)}"
