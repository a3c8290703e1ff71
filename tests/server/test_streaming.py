"""Streams: NDJSON or SSE, each chunk sent the moment it is yielded, errors mid-stream."""

from __future__ import annotations

import json

import pytest
import requests

import apis
import litkit
from conftest import ChunkReader, raw_post


class Handshake(litkit.LitAPI):
    """Yields one chunk, then waits (bounded) until the test says it received it, then yields another."""

    def predict(self, x):
        yield "first"
        import os
        import time

        deadline = time.monotonic() + 5
        while not os.path.exists(x["received"]) and time.monotonic() < deadline:
            time.sleep(0.002)
        yield "second" if os.path.exists(x["received"]) else "the first chunk was not delivered in time"


def test_each_chunk_goes_out_when_it_is_yielded(serve, tmp_path):
    server = serve(Handshake())
    received = tmp_path / "received"
    sock = raw_post(server.url, json.dumps({"received": str(received)}).encode())
    reader = ChunkReader(sock)
    assert reader.status == 200
    assert reader.headers["content-type"] == "application/x-ndjson"
    assert reader.headers["transfer-encoding"] == "chunked"
    assert reader.line() == b"first"  # arrived while the generator is still running
    received.touch()
    assert reader.line() == b"second"
    reader.close()
    sock.close()


def test_ndjson_lines_are_json_for_objects_and_text_for_str(serve):
    server = serve(apis.TextChunks())
    response = requests.post(server.url + "/predict", json={"chunks": ["hello", {"a": 1}, [1, 2], 3.5]}, timeout=10)
    assert response.headers["Content-Type"] == "application/x-ndjson"
    assert response.text == 'hello\n{"a":1}\n[1,2]\n3.5\n'


def test_a_str_chunk_with_a_newline_cannot_split_an_ndjson_line(serve, events):
    """Regression (issue 14, weak spot): a ``str`` chunk holding a newline went out as two NDJSON
    lines, so a model's text could forge a line of its own, such as an ``{"error": ...}``. Such a
    chunk now ends the stream with an error line saying what to yield instead; SSE carries it."""
    server = serve(apis.TextChunks())
    forged = 'fine\n{"error": "forged", "request_id": "x"}'
    sock = raw_post(server.url, json.dumps({"chunks": ["ok", forged, "never sent"]}).encode())
    reader = ChunkReader(sock)
    assert reader.status == 200
    assert reader.line() == b"ok"
    last = json.loads(reader.line())
    assert last["request_id"] == reader.headers["x-request-id"]
    assert "chunk 2 is text with a newline, which would split its NDJSON line" in last["error"]
    assert "yield a dict or list" in last["error"]
    with pytest.raises(EOFError):
        reader.line()
    reader.close()
    sock.close()
    assert server.status()["counts"]["failed"] == 1
    sse = requests.post(server.url + "/predict", json={"chunks": [forged]}, headers={"Accept": "text/event-stream"}, timeout=10)
    assert sse.text == 'data: fine\ndata: {"error": "forged", "request_id": "x"}\n\ndata: [DONE]\n\n'


def test_sse_events_end_with_done(serve):
    server = serve(apis.TextChunks())
    response = requests.post(
        server.url + "/predict", json={"chunks": ["hi", {"a": 1}, "two\nlines"]}, headers={"Accept": "text/event-stream"}, timeout=10
    )
    assert response.headers["Content-Type"] == "text/event-stream"
    assert response.text == 'data: hi\n\ndata: {"a":1}\n\ndata: two\ndata: lines\n\ndata: [DONE]\n\n'
    assert list(server.stream({"chunks": ["a", "b"]}, sse=True)) == ["a", "b"]


def test_error_mid_stream_ends_with_an_error_line(serve, events):
    server = serve(apis.Ticker(events.path))
    response = requests.post(server.url + "/predict", json={"n": 5, "fail_at": 2, "interval": 0}, timeout=10)
    assert response.status_code == 200  # the status went out with the first chunk
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[:2] == [{"i": 0}, {"i": 1}]
    assert lines[2] == {"error": "RuntimeError: failed at chunk 2", "request_id": response.headers["X-Request-ID"]}
    assert len(lines) == 3
    events.wait_for("finally")
    assert server.status()["counts"]["failed"] == 1
    with pytest.raises(litkit.HTTPError, match="failed at chunk 2"):
        list(server.stream({"n": 5, "fail_at": 2, "interval": 0}))


def test_error_mid_sse_stream_is_an_error_event(serve, events):
    server = serve(apis.Ticker(events.path))
    response = requests.post(
        server.url + "/predict", json={"n": 5, "fail_at": 1, "interval": 0}, headers={"Accept": "text/event-stream"}, timeout=10
    )
    events_text = response.text.split("\n\n")
    assert events_text[0] == 'data: {"i":0}'
    assert events_text[1].startswith("event: error\ndata: ")
    assert "failed at chunk 1" in events_text[1]
    assert "[DONE]" not in response.text
    with pytest.raises(litkit.HTTPError, match="failed at chunk 1"):
        list(server.stream({"n": 5, "fail_at": 1, "interval": 0}, sse=True))


class RefusesBeforeStreaming(litkit.LitAPI):
    def decode_request(self, request):
        if "prompt" not in request:
            raise litkit.HTTPError(422, "send a prompt")
        return request

    def predict(self, x):
        yield x["prompt"]


def test_error_before_the_first_chunk_keeps_its_status(serve):
    server = serve(RefusesBeforeStreaming())
    response = requests.post(server.url + "/predict", json={}, timeout=10)
    assert response.status_code == 422
    assert response.json()["error"] == "send a prompt"
    assert list(server.stream({"prompt": "hi"})) == ["hi"]


class NotAnIterator(litkit.LitAPI):
    def predict(self, x):
        yield 1

    def encode_response(self, output):
        return {"all": list(output)}


def test_streaming_encode_response_must_return_an_iterator(serve):
    server = serve(NotAnIterator())
    response = requests.post(server.url + "/predict", json={}, timeout=10)
    assert response.status_code == 500
    assert "encode_response of a streaming endpoint must return an iterator" in response.json()["error"]


def test_stream_flag_must_match_predict():
    with pytest.raises(ValueError, match="stream=True but Doubler.predict is not a generator function"):
        litkit.serve(apis.Doubler(), port=0, stream=True)
    with pytest.raises(ValueError, match="stream=False but Ticker.predict is a generator function"):
        litkit.serve(apis.Ticker(), port=0, stream=False)


def test_running_stream_is_counted_running(serve, events):
    """Regression: the tracker never moved dispatched requests to "running"."""
    server = serve(apis.Ticker(events.path))
    stream = server.stream({"interval": 0.01})
    next(stream)
    status = server.status()
    assert (status["counts"]["running"], status["counts"]["queued"]) == (1, 0)
    assert status["recent"][0]["state"] == "running"
    assert status["recent"][0]["chunks"] >= 1
    assert status["workers"][0]["state"] == "busy"
    stream.close()
