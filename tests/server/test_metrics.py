"""``GET /metrics``: Prometheus text format, read back with the ``prometheus_client`` parser."""

from __future__ import annotations

import json

import requests
from prometheus_client.parser import text_string_to_metric_families

import apis
from conftest import ChunkReader, raw_post, wait_until


def scrape(server) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} from /metrics, parsed by prometheus_client."""
    response = requests.get(server.url + "/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float:
    return samples[name][tuple(sorted(labels.items()))]


def test_metrics_count_requests_by_path_and_outcome(serve, events):
    server = serve({"/echo": apis.Echo(), "/tick": apis.Ticker(events.path)})
    for _ in range(3):
        assert server.predict({"x": 1}, path="/echo") == {"echo": {"x": 1}}
    assert requests.post(server.url + "/echo", json={"raise": "value"}, timeout=10).status_code == 500
    assert list(server.stream({"n": 4, "interval": 0}, path="/tick")) == [{"i": i} for i in range(4)]
    with server.stream({"interval": 0.005}, path="/tick") as chunks:  # leaves after 2 chunks
        assert [next(chunks) for _ in range(2)] == [{"i": 0}, {"i": 1}]
    events.wait_for("finally", count=2)
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the stream to be counted cancelled")

    # A worker reports DONE on its control socket after the answer went out: wait for the count.
    wait_until(lambda: value(scrape(server), "litkit_worker_requests_handled_total", path="/echo", worker="0") == 4, message="4 requests handled by /echo's worker")
    samples = scrape(server)
    assert value(samples, "litkit_requests_total", path="/echo", outcome="completed") == 3
    assert value(samples, "litkit_requests_total", path="/echo", outcome="failed") == 1
    assert value(samples, "litkit_requests_total", path="/tick", outcome="completed") == 1
    assert value(samples, "litkit_requests_total", path="/tick", outcome="cancelled") == 1
    assert value(samples, "litkit_requests_total", path="/tick", outcome="timed_out") == 0

    # Latency of completed requests: a cumulative histogram with +Inf equal to the count.
    assert value(samples, "litkit_request_duration_seconds_count", path="/echo") == 3
    assert value(samples, "litkit_request_duration_seconds_bucket", path="/echo", le="+Inf") == 3
    buckets = sorted((float(dict(labels)["le"]), count) for labels, count in samples["litkit_request_duration_seconds_bucket"].items() if dict(labels)["path"] == "/echo")
    assert [count for _, count in buckets] == sorted(count for _, count in buckets)
    assert 0 < value(samples, "litkit_request_duration_seconds_sum", path="/echo") < 30

    # Time to first chunk: both streams sent one; the JSON endpoint never streams.
    assert value(samples, "litkit_time_to_first_chunk_seconds_count", path="/tick") == 2
    assert value(samples, "litkit_time_to_first_chunk_seconds_count", path="/echo") == 0
    assert value(samples, "litkit_chunks_streamed_total", path="/tick") >= 4 + 2
    assert value(samples, "litkit_chunks_streamed_total", path="/echo") == 0

    assert value(samples, "litkit_workers", path="/echo", state="idle") == 1
    assert value(samples, "litkit_workers", path="/tick", state="busy") + value(samples, "litkit_workers", path="/tick", state="idle") == 1
    assert value(samples, "litkit_queue_depth", path="/echo") == 0


def test_metrics_show_queue_depth_running_streams_and_worker_restarts(serve, tmp_path, events):
    release = tmp_path / "release"
    server = serve(apis.Echo(events.path))
    held = raw_post(server.url, json.dumps({"tag": "held", "wait_for": str(release)}).encode())
    events.wait_for("request")
    queued = [raw_post(server.url, json.dumps({"tag": f"q{i}"}).encode()) for i in range(2)]
    wait_until(lambda: server.status()["counts"]["queued"] == 2, message="two requests to be queued")
    samples = scrape(server)
    assert value(samples, "litkit_queue_depth", path="/predict") == 2
    assert value(samples, "litkit_requests_in_progress", path="/predict", state="running") == 1
    assert value(samples, "litkit_workers", path="/predict", state="busy") == 1
    release.touch()
    for sock in (held, *queued):
        assert ChunkReader(sock).status == 200
        sock.close()

    assert requests.post(server.url + "/predict", json={"exit": 3}, timeout=10).status_code == 500
    wait_until(lambda: server.status()["workers"][0]["restarts"] == 1 and server.status()["workers"][0]["state"] == "idle", message="the worker to be replaced")
    samples = scrape(server)
    assert value(samples, "litkit_worker_restarts_total", path="/predict", worker="0") == 1
    assert value(samples, "litkit_requests_total", path="/predict", outcome="failed") == 1
    assert value(samples, "litkit_info", version=__import__("litkit").__version__) == 1
