"""The benchmark harness (benchmarks/run.py) still runs: a smoke run in its quick mode.

Speed is never asserted here (that is the harness's report); these tests only prove that the
instrument works: every scenario yields figures, every floor gets a verdict, and the report keeps
the hand-written parts of the file it writes into.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


def _report_module():
    spec = importlib.util.spec_from_file_location("bench_report", BENCHMARKS / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_report_replaces_only_its_own_block(tmp_path: Path) -> None:
    report = _report_module()
    out = tmp_path / "benchmarks.md"
    out.write_text(f"# Benchmarks\n\n## What each change bought\n\nhand-written\n\n{report.START}\nold figures\n{report.END}\n\n## After\n")
    report.write(str(out), f"{report.START}\nnew figures\n{report.END}\n")
    text = out.read_text()
    assert "hand-written" in text and "## After" in text
    assert "new figures" in text and "old figures" not in text
    assert text.count(report.START) == 1


def test_report_marks_a_floor_pending_when_a_peer_was_not_measured() -> None:
    report = _report_module()
    lines = report.floors({"litkit": {"echo_c8_rps": [1000.0]}, "tornado": {"echo_c8_rps": [1200.0]}})
    assert "- **PASS** echo req/s at concurrency 8 >= 0.7x raw Tornado: 0.83x" in lines
    assert any(line.startswith("- **PENDING** echo req/s at concurrency 8 >= 3x LitServe") for line in lines)


@pytest.mark.load
@pytest.mark.timeout(1800)  # a hang guard: the harness bounds its own runs; it asserts no speed
@pytest.mark.skipif(shutil.which("wrk") is None, reason="the harness's echo load generator is wrk: apt-get install wrk")
def test_quick_run_measures_every_scenario_on_litkit_and_raw_tornado(tmp_path: Path) -> None:
    out, raw = tmp_path / "benchmarks.md", tmp_path / "raw.json"
    out.write_text("# Benchmarks\n\nhand-written history\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "run.py"), "--quick", "--out", str(out), "--json", str(raw)],
        capture_output=True, text=True, timeout=1500, env=env, cwd=ROOT,  # a hang guard, as above
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(raw.read_text())["results"]
    for system in ("litkit", "tornado"):
        for key in ("echo_c1_rps", "echo_c8_p50_ms", "echo2w_c8_rps", "stream_chunks_per_s", "stream_ttfc_ms",
                    "cancel1_after", "cancel20_finally_ms", "queued_ran", "plain_queued_ran", "ready_s", "ready_many_s", "server_uss_mib"):
            assert len(figures[system][key]) == 1 and figures[system][key][0] >= 0, (system, key, figures[system].get(key))
    assert figures["litkit"]["serve_s"][0] > 0 and figures["litkit"]["worker_uss_mib"][0] > 0
    assert figures["litkit"]["echo_errors"] == [0.0]
    # Quick as it is, the run still fails when cancellation is broken (issue 14: it took `finally`
    # never running, infinity, and an abandoned request that ran for figures like any other).
    for key in ("cancel1_finally_ms", "cancel20_finally_ms", "cancel1_next_ms", "cancel20_next_ms"):
        assert math.isfinite(figures["litkit"][key][0]), f"litkit {key}: {figures['litkit'][key]} (`finally` never ran)"
    assert figures["litkit"]["queued_ran"] == [0.0] and figures["litkit"]["plain_queued_ran"] == [0.0], "an abandoned queued request ran"
    if "widget_shown_rps" in figures["litkit"]:  # once server.widget exists
        assert figures["litkit"]["widget_shown_rps"][0] > 0 and figures["litkit"]["widget_hidden_rps"][0] > 0
    text = out.read_text()
    assert "hand-written history" in text
    assert "| figure | litkit | raw Tornado | litkit / raw Tornado |" in text
    verdicts = re.findall(r"^- \*\*(PASS|FAIL|PENDING)\*\* ", text, re.MULTILINE)
    assert len(verdicts) == len(_report_module().FLOORS), text
    # Speed floors may fail in a quick run on a busy machine; these say whether cancellation works.
    for floor in ("the abandoned queued request never runs (stream)", "the abandoned queued request never runs (plain answer)"):
        assert f"- **PASS** {floor}:" in text, text
