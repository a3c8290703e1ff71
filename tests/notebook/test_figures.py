"""The figures the dashboard's charts draw (``litkit.notebook.figures``), from plain snapshots."""

from __future__ import annotations

from litkit.notebook.figures import SAMPLE_EVERY_S, SERIES_POINTS, ChartSeries, stream_bars


def _entry(request_id: str, state: str, chunks: int, error: str | None = None) -> dict:
    return {"id": request_id, "path": "/predict", "state": state, "chunks": chunks, "error": error}


def test_stream_bars_are_the_streams_oldest_first_with_how_each_ended():
    recent = [  # newest first, as status() gives them
        _entry("run", "running", 3),
        _entry("json", "completed", 0),
        _entry("left", "cancelled", 12, "client left after 12 chunks"),
        _entry("button", "cancelled", 7, "cancelled from the dashboard after 7 chunks"),
        _entry("bad", "failed", 2, "RuntimeError: boom"),
        _entry("slow", "timed_out", 1),
        _entry("done", "completed", 9),
    ]
    assert stream_bars(recent) == [
        ["done", 9, "completed"],
        ["slow", 1, "timed out"],
        ["bad", 2, "failed"],
        ["button", 7, "cancelled"],
        ["left", 12, "client left"],
        ["run", 3, "running"],
    ]
    assert stream_bars(recent, limit=2) == [["left", 12, "client left"], ["run", 3, "running"]]


def test_the_series_takes_at_most_a_point_a_second_and_none_while_nothing_moves():
    series = ChartSeries()
    stats = {"throughput": 12.5, "p50_s": 0.0021, "p95_s": 0.0105}
    assert series.sample(100.0, stats)
    assert not series.sample(100.0 + SAMPLE_EVERY_S / 2, {**stats, "throughput": 99.0})  # too soon
    assert not series.sample(101.0, stats)  # nothing moved
    assert series.sample(102.5, {**stats, "throughput": 8.0})
    assert series.sample(103.5, {"throughput": 0.0, "p50_s": None, "p95_s": None})
    assert series.points() == [[0.0, 12.5, 2.1, 10.5], [2.5, 8.0, 2.1, 10.5], [3.5, 0.0, None, None]]


def test_the_series_keeps_the_last_minutes_only():
    series = ChartSeries()
    for second in range(SERIES_POINTS + 20):
        series.sample(float(second), {"throughput": float(second)})
    points = series.points()
    assert len(points) == SERIES_POINTS and points[-1][1] == SERIES_POINTS + 19.0
