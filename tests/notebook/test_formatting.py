"""The dashboard's text, from status snapshot entries."""

from __future__ import annotations

from litkit.notebook.formatting import describe_request, format_seconds, render_cancel_label, render_header, render_health, render_logs, render_requests, render_workers, running_requests


def entry(**fields):
    base = {"id": "r", "path": "/predict", "state": "completed", "chunks": 0, "duration_s": 0.01, "elapsed_s": 0.01, "error": None}
    base.update(fields)
    return base


def test_describe_request_says_how_far_each_got():
    assert describe_request(entry(state="cancelled", chunks=12, error="client left after 12 chunks")) == "client left after 12 chunks"
    assert describe_request(entry(state="running", chunks=1)) == "streaming: 1 chunk sent"
    assert describe_request(entry(state="running")) == "running"
    assert describe_request(entry(state="queued")) == "waiting for a worker"
    assert describe_request(entry(state="completed", chunks=3)) == "3 chunks"
    assert describe_request(entry(state="completed")) == "answered"
    assert describe_request(entry(state="timed_out", error="no response within timeout=1s")) == "no response within timeout=1s"


def test_format_seconds():
    assert [format_seconds(s) for s in (None, 0.0000004, 0.0123, 1.239, 125)] == ["—", "0 µs", "12.3 ms", "1.24 s", "2 min 5 s"]


def test_everything_from_outside_is_escaped():
    shown = render_requests([entry(id="<i>", path="/p?a&b", state="failed", error="<script>alert(1)</script>")])
    assert "<script>" not in shown and "&lt;script&gt;" in shown and "&lt;i&gt;" in shown and "/p?a&amp;b" in shown
    logs = render_logs([{"worker": 0, "stream": "stderr", "text": "</pre><b>x"}])
    assert "</pre><b>" not in logs and "&lt;/pre&gt;&lt;b&gt;x" in logs


def test_request_table_is_bounded():
    shown = render_requests([entry(id=f"r{i}") for i in range(40)], limit=15)
    assert shown.count("<tr>") == 16 and "and 25 older" in shown


def test_running_requests_are_oldest_first():
    recent = [entry(id="new", state="queued"), entry(id="done"), entry(id="old", state="running", chunks=2)]
    assert [request_id for request_id, _ in running_requests(recent)] == ["old", "new"]


def test_health_line_only_when_unhealthy_and_escaped():
    assert render_health(None) == "" and render_health({"ok": True, "reason": None}) == ""
    line = render_health({"ok": False, "reason": "worker 0 is down: <boom>"})
    assert "unhealthy" in line and "&lt;boom&gt;" in line and "<boom>" not in line


def test_ray_figures_show_states_and_escape_what_ray_says():
    from litkit.notebook.formatting import render_ray_application, render_ray_deployments

    text = render_ray_application({"application": "a<b", "status": "DEPLOYING", "replicas": {"RUNNING": 1, "STARTING": 2}, "message": "<waiting> & more"})
    assert "<code>a&lt;b</code>" in text and "&lt;waiting&gt; &amp; more" in text
    assert '1 <span class="litkit-state" data-state="RUNNING"' in text and '2 <span class="litkit-state" data-state="STARTING"' in text
    rows = render_ray_deployments([{"name": "A", "paths": ["/a", "/a/v1"], "status": "UNHEALTHY", "replicas": {}, "message": "x"}, {"name": "Router", "paths": [], "status": "HEALTHY"}])
    assert "/a /a/v1" in rows and "(routes to the others)" in rows and 'data-state="UNHEALTHY" style="color:#cf222e' in rows
    assert "no deployments" in render_ray_deployments([])


INJECTED_TARGET = "/predict?<img src=x onerror=alert(1)>"


def test_a_cancel_row_shows_the_target_as_text_never_as_html():
    """Issue 25, bug 1: a request whose target carries HTML (``POST /predict?<img src=x
    onerror=...>``) was shown unescaped in the Cancel row: ``running_requests`` made an HTML line
    that the ipywidgets fallback rendered as HTML. The line is plain text now, and the fallback's
    HTML escapes it."""
    [(request_id, text)] = running_requests([entry(id="r-1", path=INJECTED_TARGET, state="running", chunks=2, elapsed_s=3.0)])
    assert request_id == "r-1" and INJECTED_TARGET in text  # plain text: the browser's panel sets it as textContent
    label = render_cancel_label(text)
    assert "<img" not in label and "&lt;img src=x onerror=alert(1)&gt;" in label


def test_a_rerun_shows_the_new_version_serving_the_old_one_draining_and_who_answered_what():
    """After a re-run (issue 24) the header says which version serves and which still finishes
    its requests; the tables say which version each worker and request belongs to. Before any
    re-run none of it shows."""
    header = lambda versions: render_header("Echo", "serving", "http://127.0.0.1:8000/predict", "http://127.0.0.1:8000/info", versions=versions)
    assert "version" not in header([{"version": 1, "state": "serving", "in_flight": 0}])
    switching = header([{"version": 2, "state": "serving", "in_flight": 1}, {"version": 1, "state": "draining", "in_flight": 3}])
    assert 'data-version="2"' in switching and 'data-state="serving"' in switching
    assert 'data-version="1"' in switching and 'data-state="draining"' in switching and "(3 requests left)" in switching
    assert "version" not in render_workers([{"id": 0, "pid": 7, "state": "idle", "version": 1}])
    workers = render_workers([{"id": 0, "pid": 8, "state": "idle", "version": 2}, {"id": 0, "pid": 7, "state": "busy", "version": 1}])
    assert ">version</th>" in workers and workers.index(">2</td>") < workers.index(">1</td>")
    requests = render_requests([entry(id="b", version=2), entry(id="a", version=1)])
    assert ">version</th>" in requests and requests.index(">2</td>") < requests.index(">1</td>")
