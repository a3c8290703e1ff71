"""Joining a running batched stream (``LitAPI.joinable``, issue 27): a request that arrives while a
batch streams joins it at its next step instead of waiting for the whole batch to end."""

from __future__ import annotations

import json
import os
import pickle
import socket
import sys

import apis
import cloudpickle
import pytest
from conftest import DEADLINE_S, ChunkReader, raw_post, wait_until

import litkit
from litkit.pool.devices import Placement
from litkit.pool.processes import launch
from litkit.wire.protocol import FrameParser, Kind, MessageReader, encode_batch, encode_frame, encode_request


def _chunks_until(reader: ChunkReader, done) -> list[dict]:
    """Chunks read off ``reader`` until ``done(chunks)`` says enough."""
    chunks: list[dict] = []
    while not done(chunks):
        chunks.append(json.loads(reader.line()))
    return chunks


def _rest(reader: ChunkReader) -> list[dict]:
    """Every chunk left in ``reader``'s stream, to its end."""
    chunks = []
    while True:
        try:
            chunks.append(json.loads(reader.line()))
        except EOFError:
            return chunks


def test_a_request_sent_while_a_joinable_batch_streams_joins_it_at_the_next_step(serve, events):
    """Before joining, a request that arrived while a batch streamed waited for the whole batch to
    end (pool: only an idle worker got a group); now it is appended to predict's list and gets its
    answer while the first stream goes on, each request on its own stream."""
    server = serve(apis.JoinTicker(events.path), max_batch_size=4, batch_timeout=0.0)
    first_socket = raw_post(server.url, json.dumps({"tag": "first", "interval": 0.01}).encode())  # streams until its client leaves
    first = ChunkReader(first_socket)
    assert json.loads(first.line()) == {"i": 0, "tag": "first", "rows": 1}
    second_socket = raw_post(server.url, json.dumps({"tag": "second", "n": 3}).encode())
    second = ChunkReader(second_socket)
    joined = _rest(second)
    assert [(c["i"], c["tag"], c["rows"]) for c in joined] == [(0, "second", 2), (1, "second", 2), (2, "second", 2)]
    # The first stream was never interrupted, and it still goes on now that the second is answered.
    read = _chunks_until(first, lambda chunks: chunks and chunks[-1]["rows"] == 2 and chunks[-1]["i"] >= joined[-1]["i"] + 5)
    assert [c["i"] for c in read] == list(range(1, len(read) + 1)) and {c["tag"] for c in read} == {"first"}
    assert [e["tags"] for e in events.named("batch")] == [["first"]]  # one predict call served both
    first.file.close()
    first_socket.close()
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the first client counted cancelled")
    assert server.status()["counts"]["completed"] == 1
    second_socket.close()


def test_a_batch_whose_api_does_not_take_joiners_makes_a_new_request_wait_for_its_end(serve, events):
    """An API that leaves ``joinable`` out is served as before joining existed: a request that
    arrives while its batch streams stays queued until the batch ends, then starts the next one."""
    server = serve(apis.JoinTicker(events.path, joinable=False), max_batch_size=4, batch_timeout=0.0)
    first_socket = raw_post(server.url, json.dumps({"tag": "first", "interval": 0.01}).encode())
    first = ChunkReader(first_socket)
    assert json.loads(first.line())["i"] == 0
    second_socket = raw_post(server.url, json.dumps({"tag": "second", "n": 2}).encode())
    wait_until(lambda: server.status()["counts"]["queued"] == 1, message="the second request queued")
    queued_at = len(events.named("step"))
    _chunks_until(first, lambda chunks: len(chunks) >= 20)  # the batch goes on for 20 more steps ...
    assert {e["rows"] for e in events.named("step")[queued_at:]} == {1}  # ... without the second request
    assert server.status()["counts"]["queued"] == 1
    first.file.close()
    first_socket.close()
    assert _rest(ChunkReader(second_socket)) == [{"i": 0, "tag": "second", "rows": 1}, {"i": 1, "tag": "second", "rows": 1}]
    assert [e["tags"] for e in events.named("batch")] == [["first"], ["second"]]
    second_socket.close()


def test_a_full_joinable_batch_takes_a_request_once_one_of_its_requests_has_left(serve, events):
    """Room is counted in requests still going (max_batch_size): a third request waits while two
    stream, and joins once a client leaves (its row stays in predict's list, and
    ``litkit.cancelled(i)`` says it left); the joined request's index is the next one."""
    server = serve(apis.JoinTicker(events.path), max_batch_size=2, batch_timeout=0.0)
    sockets = [raw_post(server.url, json.dumps({"tag": "a", "interval": 0.01}).encode())]
    readers = [ChunkReader(sockets[0])]
    assert json.loads(readers[0].line())["i"] == 0
    sockets.append(raw_post(server.url, json.dumps({"tag": "b"}).encode()))
    readers.append(ChunkReader(sockets[1]))
    assert json.loads(readers[1].line()) == {"i": 0, "tag": "b", "rows": 2}
    sockets.append(raw_post(server.url, json.dumps({"tag": "c", "n": 2}).encode()))
    wait_until(lambda: server.status()["counts"]["queued"] == 1, message="the third request queued: the batch is full")
    queued_at = len(events.named("step"))
    _chunks_until(readers[0], lambda chunks: len(chunks) >= 20)
    assert {e["rows"] for e in events.named("step")[queued_at:]} == {2}
    readers[1].file.close()
    sockets[1].close()  # b leaves: its row is dropped, and c takes its place in the batch
    assert _rest(ChunkReader(sockets[2])) == [{"i": 0, "tag": "c", "rows": 3}, {"i": 1, "tag": "c", "rows": 3}]
    joined = [e for e in events.named("step") if e["rows"] == 3]
    assert joined[0]["tags"] == ["a", "b", "c"] and joined[0]["cancelled"] == [False, True, False]
    assert [e["tags"] for e in events.named("batch")] == [["a"]]
    readers[0].file.close()
    sockets[0].close()
    wait_until(lambda: server.status()["counts"]["cancelled"] == 2, message="a and b counted cancelled")
    sockets[2].close()


def test_joinable_must_be_true_or_false(serve):
    with pytest.raises(litkit.WorkerStartError, match=r"JoinTicker.joinable must be True or False, got 'yes'"):
        serve(apis.JoinTicker(joinable="yes"), max_batch_size=2)


class _Worker:
    """A real worker process, driven over the wire protocol as the pool drives it."""

    def __init__(self, api: litkit.LitAPI, max_batch_size: int) -> None:
        self.process, self.control = launch(0, Placement("cpu", None))
        self.messages = MessageReader(self.control)
        init = {"sys_path": list(sys.path), "api": cloudpickle.dumps(api), "stream": True, "device": "cpu",
                "max_batch_size": max_batch_size, "spec": None, "code_origins": None}
        self.control.settimeout(DEADLINE_S)
        self.control.sendall(encode_frame(Kind.INIT, pickle.dumps(init)))
        kind, payload, _ = self.messages.recv()
        assert kind == Kind.READY, (kind, payload)
        self.ready = json.loads(payload)

    def send(self, kind: Kind, requests: list[tuple[str, dict]]) -> list[int]:
        """Send a BATCH (or one JOIN); return the read ends of the requests' pipes."""
        pipes = [os.pipe() for _ in requests]
        encoded = [(key, json.dumps(body).encode()) for key, body in requests]
        head, body = encode_batch(encoded) if kind == Kind.BATCH else encode_request(*encoded[0], kind)
        socket.send_fds(self.control, [head + body], [write_fd for _, write_fd in pipes])
        for _, write_fd in pipes:
            os.close(write_fd)
        return [read_fd for read_fd, _ in pipes]

    def stop(self) -> None:
        self.control.close()
        self.process.wait(DEADLINE_S)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _answer(read_fd: int) -> list[tuple[Kind, bytes]]:
    """Every frame written on a response pipe, to its end."""
    parser, frames = FrameParser(), []
    with os.fdopen(read_fd, "rb") as pipe:
        while data := pipe.read1(65536):
            frames += parser.feed(data)
    return frames


def test_a_join_that_reaches_a_worker_after_its_batch_ended_runs_as_the_next_batch():
    """The pool may send JOIN to a worker whose batch ends at that moment (its DONE on the way): the
    worker must run it as the next batch, never drop it, and name in each DONE the requests it ran."""
    worker = _Worker(apis.JoinTicker(), max_batch_size=2)
    try:
        assert worker.ready["joinable"] is True
        [first] = worker.send(Kind.BATCH, [("k1", {"tag": "a", "n": 2})])
        assert [kind for kind, _ in _answer(first)] == [Kind.CHUNK, Kind.CHUNK, Kind.END]
        assert [worker.messages.recv()[:2] for _ in range(2)] == [(Kind.LEFT, b"k1"), (Kind.DONE, b"k1")]
        [late] = worker.send(Kind.JOIN, [("k2", {"tag": "b", "n": 1})])  # its batch is over
        frames = _answer(late)
        assert frames == [(Kind.CHUNK, b'{"i":0,"tag":"b","rows":1}'), (Kind.END, b"")]
        assert [worker.messages.recv()[:2] for _ in range(2)] == [(Kind.LEFT, b"k2"), (Kind.DONE, b"k2")]
    finally:
        worker.stop()


def test_a_worker_whose_api_does_not_take_joiners_says_so_in_ready():
    worker = _Worker(apis.JoinTicker(joinable=False), max_batch_size=2)
    try:
        assert worker.ready["joinable"] is False
    finally:
        worker.stop()
