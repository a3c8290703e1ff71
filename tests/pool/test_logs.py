"""What workers print, and hook tracebacks, reach status()["logs"] and the ``litkit.worker`` logger."""

from __future__ import annotations

import logging
import re

import pytest

import apis
import litkit
from conftest import wait_until
from litkit.pool.logs import LOG_LIMIT, MAX_LINE_CHARS, LineSplitter, WorkerLog


def _texts(server, stream=None):
    return [line["text"] for line in server.status()["logs"] if stream is None or line["stream"] == stream]


def test_print_in_a_hook_reaches_the_log_and_the_logger(serve, caplog):
    caplog.set_level(logging.INFO, logger="litkit.worker")
    server = serve(apis.Echo(), workers=1)
    server.predict({"print": ["hello from predict", "second line"], "stderr": ["a warning"]})
    wait_until(lambda: "a warning" in _texts(server) and "second line" in _texts(server), message="the printed lines in status()['logs']")
    logs = server.status()["logs"]
    by_text = {line["text"]: line for line in logs}
    assert by_text["hello from predict"]["stream"] == "stdout"
    assert by_text["a warning"]["stream"] == "stderr"
    assert by_text["hello from predict"]["worker"] == 0
    assert _texts(server, "stdout").index("hello from predict") < _texts(server, "stdout").index("second line")
    records = [r for r in caplog.records if r.name == "litkit.worker"]
    assert any(r.getMessage() == "[worker 0 stdout] hello from predict" and r.levelno == logging.INFO for r in records)
    assert any(getattr(r, "stream", None) == "stderr" and getattr(r, "worker_id", None) == 0 for r in records)


def test_binary_output_and_a_stderr_flood_break_nothing(serve):
    """Bytes that are not UTF-8 are replaced; a line with no newline is cut into bounded pieces;
    the control channel and the responses are unaffected (AnyIO tests the same of its workers)."""
    server = serve(apis.Echo())
    flood = 3 * MAX_LINE_CHARS + 17
    assert server.predict({"print": [], "junk": True, "flood": flood}) == {"echo": {"print": [], "junk": True, "flood": flood}}
    assert server.predict({"x": 1}) == {"echo": {"x": 1}}
    wait_until(lambda: any("\ufffd" in text for text in _texts(server, "stdout")), message="the junk line")
    wait_until(lambda: len([t for t in _texts(server, "stderr") if set(t) == {"x"}]) >= 3, message="the flood's pieces")
    pieces = [t for t in _texts(server, "stderr") if set(t) == {"x"}]
    assert all(len(piece) <= MAX_LINE_CHARS for piece in pieces)


def test_last_partial_line_is_kept_when_the_worker_exits(serve):
    server = serve(apis.Echo())
    server.predict({"print": [], "flood": 5})  # "xxxxx" without a newline
    server.stop()
    assert "xxxxx" in _texts(server, "stderr")


def test_hook_traceback_reaches_the_log_panel(serve, caplog):
    server = serve(apis.Echo())
    with pytest.raises(litkit.HTTPError):
        server.predict({"raise": "value"})
    texts = _texts(server, "traceback")
    assert texts[0].startswith("request ") and texts[0].endswith(" failed:")
    assert "Traceback (most recent call last):" in texts
    assert texts[-1] == "ValueError: bad value 42"
    # Logged once, by litkit.server at ERROR; the log panel's copy is not logged again.
    assert not [r for r in caplog.records if r.name == "litkit.worker" and "bad value 42" in r.getMessage()]


def test_line_splitter_bounds_and_decodes():
    splitter = LineSplitter()
    assert splitter.feed(b"a\nb") == ["a"]
    assert splitter.feed(b"c\r\n\xff\xfe\n") == ["bc", "\ufffd\ufffd"]
    assert splitter.feed(b"y" * (MAX_LINE_CHARS + 5)) == ["y" * MAX_LINE_CHARS]
    assert splitter.flush() == ["yyyyy"]
    assert splitter.flush() == []


def test_worker_log_keeps_the_last_lines_and_calls_listeners():
    log = WorkerLog()
    heard = []
    log.listeners.append(lambda worker, stream, text: heard.append((worker, stream, text)))
    for i in range(LOG_LIMIT + 10):
        log.add(1, "stdout", f"line {i}")
    lines = log.snapshot()
    assert len(lines) == LOG_LIMIT
    assert lines[0]["text"] == "line 10" and lines[-1]["text"] == f"line {LOG_LIMIT + 9}"
    assert heard[-1] == (1, "stdout", f"line {LOG_LIMIT + 9}")
    log.add(2, "traceback", "one\ntwo")
    assert [line["text"] for line in log.snapshot()[-2:]] == ["one", "two"]


def test_several_endpoints_share_one_log_panel_and_cancel(serve, events):
    """status()["logs"] merges every endpoint's workers (each line names its endpoint); Server.cancel
    finds a request on any endpoint; stats count every endpoint."""
    server = serve({"/echo": apis.Echo(), "/ticks": apis.Ticker(events.path)})
    server.predict({"print": ["from the echo endpoint"]}, path="/echo")
    wait_until(lambda: "from the echo endpoint" in _texts(server), message="the echo endpoint's line")
    line = next(line for line in server.status()["logs"] if line["text"] == "from the echo endpoint")
    assert (line["endpoint"], line["worker"], line["stream"]) == ("/echo", 0, "stdout")
    stream = server.stream({"interval": 0.005}, path="/ticks")
    next(stream)
    ticking = next(r for r in server.status()["recent"] if r["path"] == "/ticks")
    assert server.cancel(ticking["id"], "cancelled from the dashboard") is True
    events.wait_for("finally")
    with pytest.raises(litkit.HTTPError, match="cancelled from the dashboard"):
        for _ in stream:
            pass
    stream.close()
    status = server.status()
    assert status["counts"]["cancelled"] == 1 and status["stats"]["completed"] == 1
    header = server.widget._sections["header"].value
    assert "Echo, Ticker" in header and f"POST {server.url} /echo /ticks" in header


class SlowSetup(litkit.LitAPI):
    """A setup() that prints, then takes a while (loading a model), then prints to stderr."""

    def setup(self, device):
        import sys
        import time

        print("loading the weights", flush=True)
        time.sleep(1.5)
        print("weights loaded", file=sys.stderr, flush=True)

    def predict(self, x):
        return x


def test_what_workers_print_while_they_start_shows_in_the_caller_with_a_progress_line(serve, capsys):
    """Regression (issue 14, a new user's rough edges): a long ``setup()`` showed nothing, and its
    prints reached neither the notebook cell nor the terminal."""
    server = serve(SlowSetup(), workers=1)
    captured = capsys.readouterr()
    assert "loading the weights\n" in captured.out
    assert "weights loaded\n" in captured.err
    assert re.search(r"^litkit: starting 1 worker: setup\(\) has run for \d+ s$", captured.out, re.MULTILINE), captured.out
    # (Which comes first, the print or the progress line, depends on how long the worker took to
    # start: on a loaded machine the interpreter alone can take more than the line's 1 s.)
    assert server.predict({"x": 1}) == {"x": 1}
    assert capsys.readouterr().out == ""  # once started, nothing more is printed by serve()
