"""A client that half-closes (``shutdown(SHUT_WR)``) after a complete HTTP/1.1 request still gets its
answer; a client that closes is still a hang-up (litkit.server.halfclose). Raw sockets against a
real server and real workers."""

from __future__ import annotations

import json
import os
import socket
import struct

import pytest

import apis
import litkit
from conftest import ChunkReader, assert_nothing_at_error, raw_post, wait_until

pytestmark = pytest.mark.skipif(not hasattr(__import__("select"), "epoll"), reason="half-closes are told from closes on Linux only")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def half_close_and_wait_for_the_probe(sock: socket.socket) -> None:
    """Half-close, then wait until the server's interim 100 is there (left unread)."""
    sock.shutdown(socket.SHUT_WR)
    assert sock.recv(len(CONTINUE), socket.MSG_PEEK | socket.MSG_WAITALL) == CONTINUE


def read_after_continue(sock: socket.socket) -> ChunkReader:
    """The answer's head, after the interim 100 (which a client skips)."""
    file = sock.makefile("rb")
    assert file.read(len(CONTINUE)) == CONTINUE
    return ChunkReader(file)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- a half-close is not a hang-up ----------------------------------------------------------------


def test_a_running_json_request_half_closed_gets_its_whole_answer(serve, events, tmp_path, caplog):
    """Regression (issue 14): the server took the client's FIN for a hang-up and cancelled the request."""
    server = serve(apis.Echo(events.path), workers=1)
    release = tmp_path / "release"
    sock = raw_post(server.url, json.dumps({"tag": "A", "wait_for": str(release)}).encode())
    try:
        events.wait_for("request")  # running in the worker
        half_close_and_wait_for_the_probe(sock)
        release.touch()
        reader = read_after_continue(sock)
        assert reader.status == 200
        assert reader.headers["connection"] == "close"
        assert json.loads(reader.body()) == {"echo": {"tag": "A", "wait_for": str(release)}}
        assert reader.file.read() == b"", "the server closes the connection after the answer"
        reader.close()
    finally:
        sock.close()
    counts = server.status()["counts"]
    assert (counts["completed"], counts["cancelled"]) == (1, 0)
    assert_nothing_at_error(caplog)


def test_a_queued_json_request_half_closed_runs_and_gets_its_answer(serve, events, tmp_path, caplog):
    server = serve(apis.Echo(events.path), workers=1)
    release = tmp_path / "release"
    busy = raw_post(server.url, json.dumps({"tag": "A", "wait_for": str(release)}).encode())
    waiting = raw_post(server.url, json.dumps({"tag": "B"}).encode())
    try:
        events.wait_for("request")
        wait_until(lambda: server.status()["counts"]["queued"] == 1, message="B to be queued")
        half_close_and_wait_for_the_probe(waiting)
        release.touch()
        assert ChunkReader(busy).status == 200
        reader = read_after_continue(waiting)
        assert (reader.status, json.loads(reader.body())) == (200, {"echo": {"tag": "B"}})
        reader.close()
    finally:
        busy.close()
        waiting.close()
    assert [e["tag"] for e in events.named("request")] == ["A", "B"]
    assert_nothing_at_error(caplog)


@pytest.mark.parametrize("sse", [False, True], ids=["ndjson", "sse"])
def test_a_stream_half_closed_before_its_first_chunk_arrives_whole(serve, events, tmp_path, caplog, sse):
    server = serve(apis.Ticker(events.path))
    release = tmp_path / "release"
    headers = {"Accept": "text/event-stream"} if sse else None
    sock = raw_post(server.url, json.dumps({"n": 5, "interval": 0, "wait_for": str(release)}).encode(), headers)
    try:
        events.wait_for("request")
        half_close_and_wait_for_the_probe(sock)
        release.touch()
        reader = read_after_continue(sock)
        assert reader.status == 200
        assert (reader.headers["transfer-encoding"], reader.headers["connection"]) == ("chunked", "close")
        assert reader.headers["content-type"] == ("text/event-stream" if sse else "application/x-ndjson")
        if sse:
            lines = [reader.line() for _ in range(12)]  # "data: ...", "" per event, then [DONE]
            assert [line for line in lines if line] == [b'data: {"i":%d}' % i for i in range(5)] + [b"data: [DONE]"]
        else:
            assert [json.loads(reader.line()) for _ in range(5)] == [{"i": i} for i in range(5)]
        with pytest.raises(EOFError):
            reader.line()
        assert reader.file.read() == b"\r\n", "the chunked body ends, then the connection"
        reader.close()
    finally:
        sock.close()
    wait_until(lambda: server.status()["counts"]["completed"] == 1, message="the stream to be counted completed")
    assert_nothing_at_error(caplog)


@pytest.mark.parametrize("sse", [False, True], ids=["ndjson", "sse"])
def test_a_stream_half_closed_after_its_first_chunks_arrives_whole(serve, events, caplog, sse):
    """Issue 25, bug 8: a half-close 10 ms after a streaming request cut the stream short (18 of
    20 tries on 3.11, 20 of 20 on 3.13): once the stream was under way, end of file was taken for a
    hang-up. Here the half-close comes after the first chunks were read, every time."""
    server = serve(apis.Ticker(events.path))
    for attempt in range(5):
        headers = {"Accept": "text/event-stream"} if sse else None
        sock = raw_post(server.url, json.dumps({"n": 20, "interval": 0.01, "tag": attempt}).encode(), headers)
        reader = None
        try:
            sock.settimeout(10)
            reader = ChunkReader(sock)
            assert reader.status == 200
            first = reader.line()  # the stream is under way
            sock.shutdown(socket.SHUT_WR)
            lines = [first]
            while True:
                try:
                    lines.append(reader.line())
                except (EOFError, ValueError):  # the chunked body's end, or a connection closed without it
                    break
            if sse:
                got = [json.loads(line[len(b"data: "):]) for line in lines if line.startswith(b"data: {")]
            else:
                got = [json.loads(line) for line in lines]
            assert got == [{"i": i} for i in range(20)], f"attempt {attempt}: the stream was cut after {len(got)} chunks"
        finally:
            if reader is not None:
                reader.close()
            sock.close()
    wait_until(lambda: server.status()["counts"]["completed"] == 5, message="the five streams to be counted completed")
    assert server.status()["counts"]["cancelled"] == 0
    assert_nothing_at_error(caplog)


# -- a close is still a hang-up -------------------------------------------------------------------


def test_a_stream_whose_client_resets_is_cancelled_when_the_rest_of_it_comes_in_the_same_turn(serve, events, tmp_path, caplog):
    """Issue 25, bug 8 (why the take-over of 4f8a1b1 was reverted): a stream's connection is closed
    a turn of the loop before the relay hears of it (Tornado's on a reset read or a failed write,
    the spare's on a reset), and a closed stream drops writes and never reports one pending, so
    the relay read the pipe on, unblocking the worker, until the pipe was empty. A generator
    that kept it full ran to its end for a client that had gone: in the load soak, one of 2,000
    streams of 100,000 chunks cut after the first was counted completed. Here the server's loop
    is held while the client resets and the rest of the stream and its end reach the pipe, so
    both come in one turn: before the fix the stream was counted completed, its client gone."""
    server = serve(apis.LoopHolder(events.path), workers=1)
    go, release = tmp_path / "go", tmp_path / "release"
    sock = raw_post(server.url, json.dumps({"n": 500, "interval": 0, "then_wait_for": str(go)}).encode())
    holder = None
    try:
        sock.settimeout(10)
        reader = ChunkReader(sock)
        assert reader.status == 200
        assert json.loads(reader.line()) == {"i": 0}  # under way; the generator waits for `go`
        holder = raw_post(server.url, json.dumps({"n": 1}).encode(), {"X-Hold-Loop-Until": str(release)})
        events.wait_for("loop_held")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        reader.close()
        sock.close()
        go.touch()
        events.wait_for("finally")  # its other 499 chunks (about 7 KB) and its end are in the pipe
        release.touch()
        held = ChunkReader(holder)
        assert (held.status, json.loads(held.line())) == (200, {"i": 0})
        with pytest.raises(EOFError):
            held.line()  # the stream's end: read whole, it counts completed
        held.close()
    finally:
        release.touch()  # a failed step must not leave the loop held
        sock.close()
        if holder is not None:
            holder.close()
    wait_until(lambda: sum(server.status()["counts"][state] for state in ("completed", "cancelled")) == 2, message="both requests to end")
    counts = server.status()["counts"]
    assert (counts["completed"], counts["cancelled"]) == (1, 1), f"the stream whose client reset must be cancelled, not completed: {counts}"
    assert_nothing_at_error(caplog)



# A running JSON request whose client closes (a FIN, no reset) is still cancelled at once, one round
# trip later (the 100 draws the reset): tests/worker/test_cancellation.py,
# test_non_streaming_disconnect_turns_cancelled_true_and_discards_the_result.


def test_a_queued_request_whose_client_closes_never_runs(serve, events, tmp_path, caplog):
    server = serve(apis.Echo(events.path), workers=1)
    release = tmp_path / "release"
    busy = raw_post(server.url, json.dumps({"tag": "A", "wait_for": str(release)}).encode())
    try:
        events.wait_for("request")
        abandoned = raw_post(server.url, json.dumps({"tag": "B"}).encode())
        wait_until(lambda: server.status()["counts"]["queued"] == 1, message="B to be queued")
        abandoned.close()
        wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="B to be counted cancelled")
        release.touch()
        assert ChunkReader(busy).status == 200
    finally:
        busy.close()
    assert server.predict({"tag": "C"}) == {"echo": {"tag": "C"}}
    assert [e["tag"] for e in events.named("request")] == ["A", "C"], "the abandoned request reached a worker"
    assert_nothing_at_error(caplog)


def test_a_client_that_half_closed_and_then_closes_is_a_hang_up(serve, events, caplog):
    """After a half-close was accepted, the reset watch goes on: the close draws a reset (the
    unread 100), and the work stops."""
    server = serve(apis.SlowUntilCancelled(events.path))
    sock = raw_post(server.url, b"{}")
    events.wait_for("started")
    half_close_and_wait_for_the_probe(sock)
    sock.close()
    events.wait_for("saw_cancelled")  # predict loops until litkit.cancelled(): long before its own end
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the request to be counted cancelled")
    assert_nothing_at_error(caplog)


def test_a_stream_half_closed_then_closed_mid_way_closes_the_generator(serve, events, caplog):
    server = serve(apis.Ticker(events.path))
    sock = raw_post(server.url, json.dumps({"interval": 0.005, "sleep_steps": 20}).encode())  # 0.2 s to the first chunk
    try:
        events.wait_for("request")
        half_close_and_wait_for_the_probe(sock)
        reader = read_after_continue(sock)
        assert reader.status == 200
        assert [json.loads(reader.line()) for _ in range(3)] == [{"i": 0}, {"i": 1}, {"i": 2}]
        reader.close()
    finally:
        sock.close()
    events.wait_for("finally")
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the stream to be counted cancelled")
    assert server.status()["recent"][0]["error"].startswith("client left after ")
    assert_nothing_at_error(caplog)


def test_an_http_1_0_request_half_closed_is_a_hang_up_as_before(serve, events, tmp_path, caplog):
    """HTTP/1.0 has no 1xx answers, so there is no probe: its end of file stays a hang-up."""
    server = serve(apis.Echo(events.path), workers=1)
    release = tmp_path / "release"
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    body = json.dumps({"tag": "A", "wait_for": str(release)}).encode()
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        sock.sendall(b"POST /predict HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        events.wait_for("request")
        sock.shutdown(socket.SHUT_WR)
        wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the request to be counted cancelled")
        assert sock.recv(100) == b"", "no 100 and no answer for HTTP/1.0: the server closed"
    finally:
        release.touch()
        sock.close()
    assert_nothing_at_error(caplog)


# -- no file descriptor is left behind ------------------------------------------------------------


def test_half_closed_closed_and_answered_requests_leave_no_fd_behind(serve, events):
    server = serve(apis.Echo(events.path), workers=1)
    assert server.predict({"warm": "up"}) == {"echo": {"warm": "up"}}
    baseline = open_fds()
    for _ in range(20):
        answered = raw_post(server.url, b'{"n": 1}')
        assert ChunkReader(answered).status == 200
        answered.close()
        half_closed = raw_post(server.url, b'{"n": 2}')
        half_closed.shutdown(socket.SHUT_WR)
        reader = ChunkReader(half_closed)
        if reader.status == 100:  # the probe came before the answer (it may not: a fast answer wins)
            reader = ChunkReader(reader.file)
        assert reader.status == 200
        reader.close()
        half_closed.close()
        closed = raw_post(server.url, b'{"n": 3}')
        closed.close()
    wait_until(lambda: open_fds() <= baseline, message=f"the serving process's fds to return to {baseline}")


class Firehose(litkit.LitAPI):
    """Streams ``count`` chunks of ``size`` bytes, as fast as it can, once the file ``gate`` exists."""

    def predict(self, x):
        apis.wait_for_file(x["gate"])
        for i in range(x["count"]):
            yield str(i % 10) * (x["size"] - 1)


def test_a_half_closed_client_behind_on_reading_gets_a_large_stream_whole(serve, tmp_path, caplog):
    """The spare's writer keeps what the kernel does not take yet and sends it as the socket drains;
    the relay reads the pipe only once it did. A chunk of 8 MB is more than the kernel holds for a
    client that reads nothing (tcp_wmem's 4 MB at most, and a 64 KiB receive buffer), so the
    writer must wait; every chunk arrives whole and in order."""
    server = serve(Firehose())
    size, count = 8 * 1024 * 1024, 3
    gate = tmp_path / "gate"
    sock = raw_post(server.url, json.dumps({"size": size, "count": count, "gate": str(gate)}).encode())
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        wait_until(lambda: server.status()["counts"]["running"] == 1, message="the stream to start in its worker")
        half_close_and_wait_for_the_probe(sock)
        gate.touch()
        # status() runs on the server's loop, after the write of the first chunk was tried.
        wait_until(lambda: server.status()["recent"][0]["chunks"] >= 1, message="the first chunk to be written")
        reader = read_after_continue(sock)
        assert reader.status == 200
        for i in range(count):
            assert reader.line() == str(i).encode() * (size - 1)
        with pytest.raises(EOFError):
            reader.line()
        reader.close()
    finally:
        sock.close()
    wait_until(lambda: server.status()["counts"]["completed"] == 1, message="the stream to be counted completed")
    assert_nothing_at_error(caplog)
