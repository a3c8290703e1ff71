"""The quickstart notebook, run top to bottom in a real Jupyter kernel, shows what it promises."""

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

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "quickstart.ipynb"
WORKERS_GONE_S = 10.0


def _stdout_lines(nb: Any) -> list[str]:
    lines: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            if output.output_type == "stream" and output.name == "stdout":
                lines.extend(output.text.splitlines())
    return lines


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

    lines = _stdout_lines(nb)
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
