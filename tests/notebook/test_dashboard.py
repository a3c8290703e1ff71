"""The dashboard widget, built from status snapshots without a kernel, and on a real server.

A recording comm stands in for the notebook frontend (it is ipywidgets' transport, not a part of
litkit): every message the widgets would send to the browser is kept, so the tests can tell what
a refresh sends, and that an unchanged server sends nothing.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import threading
import time
from typing import Any

import comm
import pytest
import requests
from comm import DummyComm

import apis
import litkit.pool.pool
from conftest import DEADLINE_S, ChunkReader, raw_post, wait_until, without_startup_progress
from litkit.notebook.dashboard import CANCEL_REASON, Dashboard


class RecordingComm(DummyComm):
    sent: list[dict[str, Any]] = []

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **keys: Any) -> None:
        RecordingComm.sent.append({"type": msg_type, "comm_id": self.comm_id, "data": copy.deepcopy(data)})


@pytest.fixture
def frontend(monkeypatch):
    """Every message the widgets send, as a list (cleared by the test when it wants a fresh count)."""
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(RecordingComm, "sent", sent)
    monkeypatch.setattr(comm, "create_comm", lambda *args, **kwargs: RecordingComm(*args, **kwargs))
    return sent


def updates(sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in sent if m["type"] == "comm_msg" and m["data"].get("method") == "update"]


def snapshot(**changes: Any) -> dict[str, Any]:
    base = {
        "url": "http://127.0.0.1:8123",
        "state": "serving",
        "workers": [{"id": 0, "pid": 4242, "state": "busy", "restarts": 1, "handled": 17}],
        "counts": {"queued": 1, "running": 2, "completed": 15, "failed": 1, "cancelled": 2, "timed_out": 0},
        "recent": [
            {"id": "young", "path": "/predict", "state": "running", "chunks": 0, "duration_s": None, "elapsed_s": 0.01, "first_chunk_s": None, "error": None},
            {"id": "q-1", "path": "/predict", "state": "queued", "chunks": 0, "duration_s": None, "elapsed_s": 0.6, "first_chunk_s": None, "error": None},
            {"id": "r-1", "path": "/predict", "state": "running", "chunks": 4, "duration_s": None, "elapsed_s": 0.5, "first_chunk_s": 0.01, "error": None},
            {"id": "c-1", "path": "/predict", "state": "cancelled", "chunks": 12, "duration_s": 0.3, "elapsed_s": 0.3, "first_chunk_s": 0.01, "error": "client left after 12 chunks"},
            {"id": "f-1", "path": "/predict", "state": "failed", "chunks": 0, "duration_s": 0.002, "elapsed_s": 0.002, "first_chunk_s": None, "error": "ValueError: <bad> & worse"},
            {"id": "ok-1", "path": "/predict", "state": "completed", "chunks": 9, "duration_s": 0.045, "elapsed_s": 0.045, "first_chunk_s": 0.001, "error": None},
        ],
        "stats": {"window_s": 60.0, "completed": 15, "throughput": 0.25, "p50_s": 0.04, "p95_s": 0.2},
        "logs": [{"time": 0.0, "worker": 0, "stream": "stdout", "text": "loading <model>"}, {"time": 0.0, "worker": 0, "stream": "traceback", "text": "ValueError: boom"}],
    }
    base.update(changes)
    return base


class Source:
    """A status() that returns whatever the test sets, and records the calls of the controls."""

    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value
        self.calls = 0
        self.cancelled: list[tuple[str, str]] = []
        self.stops = 0

    def status(self) -> dict[str, Any]:
        self.calls += 1
        return copy.deepcopy(self.value)

    def cancel(self, request_id: str, reason: str) -> bool:
        self.cancelled.append((request_id, reason))
        return True

    def stop(self) -> None:
        self.stops += 1


def make(source: Source, **options: Any) -> Dashboard:
    options.setdefault("start", False)
    return Dashboard(source.status, title="TokenStreamer", endpoint="http://127.0.0.1:8123/predict", link="http://127.0.0.1:8123/info", cancel=source.cancel, stop=source.stop, **options)


def text_of(dashboard: Dashboard) -> str:
    return "\n".join(section.value for section in dashboard._sections.values())


def test_shows_what_the_snapshot_says(frontend):
    dashboard = make(Source(snapshot()))
    try:
        shown = text_of(dashboard)
        assert 'href="http://127.0.0.1:8123/info"' in shown and "POST http://127.0.0.1:8123/predict" in shown
        assert 'data-state="serving"' in shown
        for key, value in (("queued", 1), ("running", 2), ("completed", 15), ("failed", 1), ("cancelled", 2), ("timed_out", 0)):
            assert f'data-count="{key}"' in shown and f">{value}</b>" in dashboard._sections["counts"].value.split(f'data-count="{key}"')[1].split("</span>")[0]
        assert "0.2 req/s" in shown or "0.3 req/s" in shown
        assert "p50 40.0 ms" in shown and "p95 200.0 ms" in shown
        assert "<td" in dashboard._sections["workers"].value and "4242" in shown and ">17<" in shown
        assert "client left after 12 chunks" in shown
        assert "streaming: 4 chunks sent" in shown and "waiting for a worker" in shown
        assert "ValueError: &lt;bad&gt; &amp; worse" in shown and "<bad>" not in shown  # escaped
        assert "loading &lt;model&gt;" in shown and "ValueError: boom" in shown
        # one Cancel row per live request older than half a second, oldest first
        assert list(dashboard._cancel_rows) == ["r-1", "q-1"]
    finally:
        dashboard.close()


def test_the_ipywidgets_cancel_rows_escape_what_the_client_sent(frontend):
    """Issue 25, bug 1: without anywidget the Cancel rows are ipywidgets ``HTML``, and a request
    whose target carried HTML (``/predict?<img src=x onerror=...>``) went into them unescaped."""
    target = "/predict?<img src=x onerror=alert(1)>"
    recent = [{**snapshot()["recent"][2], "path": target}]
    dashboard = make(Source(snapshot(recent=recent)))
    try:
        label = dashboard._cancel_rows["r-1"].children[0].value
        assert "<img" not in label and "/predict?&lt;img src=x onerror=alert(1)&gt;" in label
        assert "<img" not in text_of(dashboard)
    finally:
        dashboard.close()


def test_refreshing_an_unchanged_server_sends_nothing(frontend):
    source = Source(snapshot())
    dashboard = make(source)
    try:
        frontend.clear()
        assert dashboard.refresh() is False
        assert dashboard.refresh() is False
        assert frontend == []
        source.value["counts"]["completed"] += 1
        assert dashboard.refresh() is True
        sent = updates(frontend)
        assert len(sent) == 1, sent  # one widget changed: one batched update
        assert "16</b>" in sent[0]["data"]["state"]["value"]
    finally:
        dashboard.close()


def test_a_refresh_batches_each_widget_into_one_message(frontend):
    source = Source(snapshot())
    dashboard = make(source)
    try:
        frontend.clear()
        source.value = snapshot(state="stopped", counts={**snapshot()["counts"], "running": 0, "queued": 0, "cancelled": 4}, recent=[])
        dashboard.refresh()
        per_widget: dict[str, int] = {}
        for message in updates(frontend):
            per_widget[message["comm_id"]] = per_widget.get(message["comm_id"], 0) + 1
        assert per_widget and max(per_widget.values()) == 1, per_widget
        assert dashboard._stop_button.disabled and dashboard._stop_button.description == "Stopped"
        assert dashboard._cancel_rows == {}
    finally:
        dashboard.close()


def test_the_buttons_call_cancel_and_stop(frontend):
    source = Source(snapshot())
    dashboard = make(source)
    try:
        row = dashboard._cancel_rows["r-1"]
        row.children[1].click()
        assert source.cancelled == [("r-1", CANCEL_REASON)]
        assert row.children[1].disabled
        dashboard._stop_button.click()
        assert source.stops == 1 and dashboard._stop_button.disabled
    finally:
        dashboard.close()


def test_refreshes_at_most_five_times_a_second_and_stops_at_the_final_state(frontend):
    source = Source(snapshot())
    dashboard = make(source, start=True)
    try:
        started_calls, started = source.calls, time.monotonic()
        time.sleep(1.0)  # measuring a rate: the one fixed wait in this file
        rate = (source.calls - started_calls) / (time.monotonic() - started)
        assert 1 <= rate <= 5.5, rate
        source.value = snapshot(state="stopped")
        wait_until(lambda: dashboard._refresher.started and not dashboard._refresher.alive(), message="the refresher to end")
        assert dashboard.state == "stopped"
    finally:
        dashboard.close()


def test_callbacks_from_another_thread_while_refreshing(frontend):
    """ipykernel 7 may run widget callbacks on a thread of its own while the refresher works."""
    source = Source(snapshot())
    dashboard = make(source, start=True, interval=0.05)
    errors: list[BaseException] = []

    def click() -> None:
        try:
            for i in range(50):
                source.value["counts"]["completed"] = i
                dashboard._cancel_rows.get("r-1", dashboard._cancel_rows.get("q-1")).children[1].click()
                time.sleep(0.002)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    try:
        threads = [threading.Thread(target=click) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert errors == []
        assert len(source.cancelled) == 100
    finally:
        dashboard.close()
    assert not dashboard._refresher.alive()


def test_interval_is_validated():
    with pytest.raises(ValueError, match="interval must be at least 0.05 seconds"):
        Dashboard(lambda: snapshot(), title="x", endpoint="e", link="l", interval=0.001)


# -- on a real server ----------------------------------------------------------------------------


def test_server_widget_follows_a_real_server_and_keeps_the_final_figures(serve, events, frontend):
    server = serve(apis.Ticker(events.path))
    dashboard = server.widget
    assert server.widget is dashboard
    for _ in range(3):
        assert len(list(server.stream({"n": 2, "interval": 0}))) == 2
    sock = raw_post(server.url, json.dumps({"interval": 0.002}).encode())
    reader = ChunkReader(sock)
    for _ in range(5):
        reader.line()
    reader.close()
    sock.close()
    wait_until(lambda: 'data-count="cancelled"' in dashboard._sections["counts"].value and ">1</b>" in dashboard._sections["counts"].value.split('data-count="cancelled"')[1][:80], message="the widget to show one cancellation")
    assert "client left after" in dashboard._sections["requests"].value
    server.stop()
    assert not dashboard._refresher.alive()  # stop() ends the refresher
    final = dashboard._sections["counts"].value
    assert 'data-state="stopped"' in dashboard._sections["header"].value
    assert dashboard._stop_panel.state == "stopped"  # the browser labels its Stop button "Stopped" (test_browser.py)
    frontend.clear()
    assert dashboard.refresh() is False  # the figures stay as they were
    assert dashboard._sections["counts"].value == final


def test_cancel_button_on_a_real_stream(serve, events, frontend):
    """The browser's Cancel: the panel lists the stream, and the click is the POST its front end
    sends, with the control secret from the panel's model."""
    server = serve(apis.Ticker(events.path))
    dashboard = server.widget
    sock = raw_post(server.url, json.dumps({"interval": 0.005}).encode(), {"X-Request-ID": "button"})
    reader = ChunkReader(sock)
    reader.line()
    wait_until(lambda: "button" in [request_id for request_id, _ in dashboard._panel.rows], message="a Cancel row for the stream")
    control = dashboard._panel.control
    clicked = requests.post(control["url"] + "/cancel", json={"request_id": "button"}, headers={control["header"]: control["secret"]}, timeout=10)
    assert clicked.json() == {"cancelled": True, "request_id": "button"}
    events.wait_for("finally")
    lines = []
    with pytest.raises(EOFError):
        while True:
            lines.append(reader.line())
    reader.close()
    sock.close()
    assert json.loads(lines[-1])["error"] == "request button was cancelled from the dashboard"
    wait_until(lambda: "cancelled from the dashboard after" in dashboard._sections["requests"].value, message="the reason in the table")


def test_cancel_button_on_a_real_json_request_answers_its_client_503(serve, events, frontend):
    """The README says a request cancelled from the dashboard answers its client 503 (issue 14
    reported a 500): a real server, a real click, a real client."""
    server = serve(apis.SlowUntilCancelled(events.path))
    dashboard = server.widget
    answer: dict = {}
    client = threading.Thread(target=lambda: answer.setdefault("response", requests.post(server.url + "/predict", json={}, headers={"X-Request-ID": "json-button"}, timeout=10)))
    client.start()
    try:
        events.wait_for("started")
        # The browser's Cancel is the POST its front end sends, with the secret from the panel's model.
        wait_until(lambda: "json-button" in [request_id for request_id, _ in dashboard._panel.rows], message="a Cancel row for the request")
        control = dashboard._panel.control
        clicked = requests.post(control["url"] + "/cancel", json={"request_id": "json-button"}, headers={control["header"]: control["secret"]}, timeout=10)
        assert clicked.json() == {"cancelled": True, "request_id": "json-button"}
    finally:
        client.join(10)
    response = answer["response"]
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "request json-button was cancelled from the dashboard"
    events.wait_for("saw_cancelled")
    assert server.status()["counts"]["cancelled"] == 1


def test_a_real_server_s_status_cancel_and_stop_from_several_threads(serve, events, frontend):
    """The dashboard's callbacks may run on another thread than the refresher's (ipykernel 7):
    ``status``, ``cancel`` and ``stop`` of a real server, called at once from several threads, raise
    nothing and leave nothing behind (the stand-in of the other tests always answers True)."""
    server = serve(apis.Ticker(events.path), workers=2)
    dashboard = server.widget
    streams = [raw_post(server.url, json.dumps({"interval": 0.005}).encode(), {"X-Request-ID": f"s{i}"}) for i in range(2)]
    errors: list[BaseException] = []
    done = threading.Event()

    def hammer(index: int) -> None:
        try:
            while not done.is_set():
                snapshot = server.status()
                for record in snapshot["recent"]:
                    server.cancel(record["id"], f"cancelled by thread {index}")
                dashboard.refresh()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: server.status()["counts"]["cancelled"] == 2, message="both streams cancelled")
        server.stop()
    finally:
        done.set()
        for thread in threads:
            thread.join(10)
        for sock in streams:
            sock.close()
    assert errors == []
    assert server.status()["state"] == "stopped"
    assert [w["state"] for w in server.status()["workers"]] == ["stopped", "stopped"]


def test_rerunning_serve_on_the_same_port_marks_the_old_widget_replaced(serve, frontend):
    first = serve(apis.Echo())
    old = first.widget
    second = serve(apis.Echo(), port=first.port)
    assert first.state == "replaced"
    assert 'data-state="replaced"' in old._sections["header"].value
    assert old._stop_panel.state == "replaced"  # the browser labels and disables its Stop button
    assert second.state == "serving"


def test_repr_outside_jupyter_is_one_line_and_loads_no_widgets():
    code = (
        "import sys, litkit\n"
        "class A(litkit.LitAPI):\n"
        "    def predict(self, x): return x\n"
        "s = litkit.serve(A(), port=0)\n"
        "print(repr(s)); print(s._repr_mimebundle_()); s.status(); s.stop()\n"
        "print('ipywidgets' in sys.modules)\n"
    )
    lines = without_startup_progress(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout.splitlines())
    assert re.fullmatch(r"<litkit.Server serving http://127.0.0.1:(\d+)/predict \(1 worker, JSON\); page http://127.0.0.1:\1/>", lines[0])
    assert lines[1] == repr({"text/plain": lines[0]})
    assert lines[2] == "False"


def test_the_header_links_to_the_page_that_calls_the_endpoints(serve, frontend):
    """Issue 23: the header's link opened /info (JSON, and a 401 on a keyed server); it opens the page at /."""
    server = serve(apis.Echo())
    assert f'href="{server.url}/"' in text_of(server.widget)


def test_repr_shows_the_proxied_url(serve, monkeypatch):
    server = serve(apis.Echo())
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    assert f"/user/ada/proxy/{server.port}/predict" in repr(server)
    assert repr(server).endswith(f"; page {server.public_url}/>")  # the page through the proxy too
    monkeypatch.setenv("LITKIT_PROXY_URL", "https://lab.example.org/proxy/{port}/")
    assert server.public_url == f"https://lab.example.org/proxy/{server.port}"


def test_shows_why_the_server_is_unhealthy_and_its_api_key(serve, frontend, tmp_path):
    """A worker left down after failing to start: /health's reason is on the dashboard too."""
    corrupt = tmp_path / "corrupt"
    server = serve(apis.Crasher(fail_setup_if=str(corrupt)), api_key="auto")
    dashboard = server.widget
    assert f'<code class="litkit-api-key">{server.api_key}</code>' in dashboard._sections["header"].value
    assert dashboard._sections["health"].value == ""
    corrupt.touch()
    assert requests.post(server.url + "/predict", json={"crash": "exit"}, headers={"X-API-Key": server.api_key}, timeout=10).status_code == 500
    # Five failed starts with the pool's real back-off between them (7.6 s), in the server's own
    # interpreter or process, where patching the caller's constant does not reach.
    give_up_s = sum(litkit.pool.pool.RESTART_BACKOFF_S) + 5 * DEADLINE_S
    wait_until(lambda: "model file is corrupt" in dashboard._sections["health"].value, give_up_s, "the dashboard to show the reason")
    assert "unhealthy" in dashboard._sections["health"].value
    assert "worker 0 is down after 5 failed starts in a row" in dashboard._sections["health"].value
    server.stop()
    assert dashboard._sections["health"].value == ""  # stopped: the state badge says it


def test_charts_follow_a_real_server(serve, events, frontend):
    """The browser draws the charts; the kernel gives them the series (at most a point a second,
    only when the figures moved) and the streams' bars, and nothing while nothing changes."""
    server = serve(apis.Ticker(events.path))
    dashboard = server.widget
    charts = dashboard._charts
    assert len(list(server.stream({"n": 3, "interval": 0}))) == 3
    sock = raw_post(server.url, json.dumps({"interval": 0.002}).encode(), {"X-Request-ID": "leaver"})
    reader = ChunkReader(sock)
    for _ in range(4):
        reader.line()
    reader.close()
    sock.close()
    wait_until(lambda: [bar[2] for bar in charts.streams] == ["completed", "client left"], message="bars for both streams")
    assert charts.streams[0][1] == 3 and charts.streams[1][0] == "leaver" and charts.streams[1][1] >= 4
    wait_until(lambda: charts.series and charts.series[-1][1] > 0, message="a point of throughput")
    assert all(len(point) == 4 for point in charts.series)
    server.stop()
    frontend.clear()
    assert dashboard.refresh() is False and updates(frontend) == []  # a stopped server sends nothing more


def _states(widget) -> list[dict]:
    """The state each widget of the dashboard would save into the notebook (ipywidgets' own)."""
    found = [widget.get_state()]
    for child in getattr(widget, "children", ()):
        found += _states(child)
    for part in ("_panel", "_stop_panel", "_charts"):
        if getattr(widget, part, None) is not None:
            found += _states(getattr(widget, part))
    return found


def test_a_stopped_server_s_widget_state_holds_neither_its_api_key_nor_its_control_secret(serve, frontend):
    """Issue 25, weak spot: the control secret and the API key were saved into the .ipynb with the
    widget state (a headless run saves it after stop(), as does saving a notebook later)."""
    pytest.importorskip("anywidget")
    server = serve(apis.Echo(), api_key="auto")
    dashboard = server.widget
    assert server._control_secret in json.dumps(_states(dashboard), default=str)  # the browser's buttons need it while it serves
    key, secret = server.api_key, server._control_secret
    server.stop()
    saved = json.dumps(_states(dashboard), default=str)
    assert key not in saved and secret not in saved
    assert 'data-state="stopped"' in dashboard._sections["header"].value  # the final figures stay
