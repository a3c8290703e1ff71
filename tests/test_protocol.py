"""The wire protocol: frames survive any split, descriptors ride with REQUEST, EOF is explicit."""

from __future__ import annotations

import os
import socket

import pytest

from litkit.protocol import (
    MAX_FDS_PER_MESSAGE,
    ChannelClosed,
    FrameParser,
    Kind,
    decode_batch,
    decode_request,
    encode_batch,
    encode_frame,
    encode_request,
    recv_message,
    send_message,
)


def test_frames_parse_whatever_the_split():
    frames = [(Kind.CHUNK, b"hello"), (Kind.CHUNK, b""), (Kind.RESULT, bytes(range(256)) * 300), (Kind.END, b"")]
    wire = b"".join(encode_frame(kind, payload) for kind, payload in frames)
    for piece in (1, 3, 7, 4096, len(wire)):
        parser = FrameParser()
        parsed = []
        for start in range(0, len(wire), piece):
            parsed += parser.feed(wire[start : start + piece])
        assert parsed == frames
        assert parser.pending == 0


def test_request_round_trip_with_its_pipe_descriptor():
    server_end, worker_end = socket.socketpair()
    read_fd, write_fd = os.pipe()
    try:
        head, body = encode_request("req-1", b'{"input": 1}' * 10_000)
        socket.send_fds(server_end, [head], [write_fd])
        server_end.sendall(body)
        kind, payload, fds = recv_message(worker_end)
        assert kind == Kind.REQUEST
        assert decode_request(payload) == ("req-1", body)
        assert len(fds) == 1
        os.write(fds[0], b"through the handed-over pipe")
        os.close(fds[0])
        assert os.read(read_fd, 100) == b"through the handed-over pipe"
    finally:
        for fd in (read_fd, write_fd):
            os.close(fd)
        server_end.close()
        worker_end.close()


def test_batch_round_trip_carries_one_pipe_per_request_in_order():
    """The largest batch the kernel can carry: every request with its own pipe, matched by position."""
    server_end, worker_end = socket.socketpair()
    pipes = [os.pipe() for _ in range(MAX_FDS_PER_MESSAGE)]
    requests = [(f"req-{i}", b'{"input": %d}' % i * (i % 3)) for i in range(MAX_FDS_PER_MESSAGE)]
    try:
        head, bodies = encode_batch(requests)
        socket.send_fds(server_end, [head], [write_fd for _, write_fd in pipes])
        server_end.sendall(bodies)
        kind, payload, fds = recv_message(worker_end, MAX_FDS_PER_MESSAGE)
        assert kind == Kind.BATCH
        assert decode_batch(payload) == requests
        assert len(fds) == len(requests)
        for i, fd in enumerate(fds):
            os.write(fd, b"answer %d" % i)
            os.close(fd)
        assert [os.read(read_fd, 100) for read_fd, _ in pipes] == [b"answer %d" % i for i in range(len(pipes))]
    finally:
        for read_fd, write_fd in pipes:
            os.close(read_fd)
            os.close(write_fd)
        server_end.close()
        worker_end.close()


def test_recv_message_reports_a_closed_channel():
    server_end, worker_end = socket.socketpair()
    send_message(server_end, Kind.DONE, b"r")
    server_end.sendall(encode_frame(Kind.DONE, b"cut short")[:6])
    server_end.close()
    try:
        assert recv_message(worker_end)[:2] == (Kind.DONE, b"r")
        with pytest.raises(ChannelClosed):
            recv_message(worker_end)
        with pytest.raises(ChannelClosed):
            recv_message(worker_end)
    finally:
        worker_end.close()


def test_worker_output_cannot_reach_the_channel(serve, capfd):
    """Hooks that print to stdout and stderr, even binary junk, do not disturb the answers."""
    import litkit

    class Noisy(litkit.LitAPI):
        def predict(self, x):
            import sys

            print("\x00\x14\xff junk" * 50)
            sys.stderr.write("more junk\n" * 50)
            sys.stdout.buffer.write(bytes(range(256)))
            sys.stdout.flush()
            return {"ok": x}

    server = serve(Noisy())
    assert [server.predict(i) for i in range(5)] == [{"ok": i} for i in range(5)]
