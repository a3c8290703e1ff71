"""The wire protocol: frames survive any split, descriptors ride with REQUEST, EOF is explicit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from litkit.wire.protocol import (
    MAX_FDS_PER_MESSAGE,
    ChannelClosed,
    FrameParser,
    Kind,
    MessageReader,
    ProtocolError,
    decode_batch,
    decode_request,
    encode_batch,
    encode_frame,
    encode_request,
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
        kind, payload, fds = MessageReader(worker_end).recv()
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
        kind, payload, fds = MessageReader(worker_end).recv()
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


def test_message_reader_reports_a_closed_channel():
    server_end, worker_end = socket.socketpair()
    send_message(server_end, Kind.DONE, b"r")
    server_end.sendall(encode_frame(Kind.DONE, b"cut short")[:6])
    server_end.close()
    try:
        reader = MessageReader(worker_end)
        assert reader.recv() == (Kind.DONE, b"r", [])
        with pytest.raises(ChannelClosed, match="middle of a frame"):
            reader.recv()
        with pytest.raises(ChannelClosed):
            reader.recv()
    finally:
        worker_end.close()


def _send_requests(sock, requests):
    """Send REQUEST frames as the server does (head, body and pipe in one sendmsg); the read ends."""
    read_fds = []
    for request_id, body in requests:
        read_fd, write_fd = os.pipe()
        socket.send_fds(sock, list(encode_request(request_id, body)), [write_fd])
        os.close(write_fd)
        read_fds.append(read_fd)
    return read_fds


def _answer_through(fds, read_fds):
    """Each received fd is the write end of the matching pipe."""
    for i, (fd, read_fd) in enumerate(zip(fds, read_fds)):
        os.write(fd, b"answer %d" % i)
        os.close(fd)
        assert os.read(read_fd, 100) == b"answer %d" % i
        os.close(read_fd)


def test_message_reader_hands_each_queued_request_its_own_pipe():
    """Two REQUEST frames queued in the socket (the server's one-ahead prefetch), then INIT-like
    frames without descriptors: each frame gets exactly its own descriptors, in order."""
    server_end, worker_end = socket.socketpair()
    try:
        read_fds = _send_requests(server_end, [("a", b'{"input": 1}'), ("b", b'{"input": 2}')])
        server_end.sendall(encode_frame(Kind.INIT, b"x" * 10) + encode_frame(Kind.INIT, b""))
        reader = MessageReader(worker_end)
        received = [reader.recv() for _ in range(4)]
        assert [(kind, payload) for kind, payload, _ in received[:2]] == [
            (Kind.REQUEST, encode_request("a", b'{"input": 1}')[0][5:] + b'{"input": 1}'),
            (Kind.REQUEST, encode_request("b", b'{"input": 2}')[0][5:] + b'{"input": 2}'),
        ]
        assert [len(fds) for _, _, fds in received] == [1, 1, 0, 0]
        assert received[2:] == [(Kind.INIT, b"x" * 10, []), (Kind.INIT, b"", [])]
        _answer_through([fds[0] for _, _, fds in received[:2]], read_fds)
    finally:
        server_end.close()
        worker_end.close()


def test_message_reader_survives_any_split_and_any_frame_size():
    """Frames that arrive a byte at a time, cut mid-header, or larger than the reader's buffer."""
    frames = [(Kind.INIT, b""), (Kind.INIT, b"small"), (Kind.INIT, bytes(range(256)) * 40), (Kind.INIT, b"y" * 100_000)]
    wire = b"".join(encode_frame(kind, payload) for kind, payload in frames)
    for piece in (1, 3, 7, 4096, len(wire)):
        server_end, worker_end = socket.socketpair()
        sender = threading.Thread(target=lambda: [server_end.sendall(wire[i : i + piece]) for i in range(0, len(wire), piece)])
        try:
            sender.start()
            reader = MessageReader(worker_end, buffer_size=1024)  # the 10 kB and 100 kB frames do not fit
            assert [reader.recv() for _ in frames] == [(kind, payload, []) for kind, payload in frames]
        finally:
            sender.join(10)
            server_end.close()
            worker_end.close()


def test_message_reader_takes_a_requests_descriptor_even_when_its_body_comes_later():
    """The descriptor rides on the first byte; the rest of the frame may take several reads."""
    server_end, worker_end = socket.socketpair()
    read_fd, write_fd = os.pipe()
    try:
        head, body = encode_request("slow", b"z" * 5000)
        socket.send_fds(server_end, [head[:1]], [write_fd])
        os.close(write_fd)
        reader = MessageReader(worker_end, buffer_size=1024)
        sender = threading.Thread(target=lambda: server_end.sendall(head[1:] + body))
        sender.start()
        kind, payload, fds = reader.recv()
        sender.join(10)
        assert kind == Kind.REQUEST and decode_request(payload) == ("slow", body) and len(fds) == 1
        _answer_through(fds, [read_fd])
    finally:
        server_end.close()
        worker_end.close()


def test_received_descriptors_are_not_inherited_by_a_hooks_subprocess():
    """A subprocess a hook starts (even with close_fds=False) must not hold a request's pipe open,
    or the server would never see the pipe close."""
    server_end, worker_end = socket.socketpair()
    try:
        read_fds = _send_requests(server_end, [("a", b"{}")])
        _, _, fds = MessageReader(worker_end).recv()
        assert not os.get_inheritable(fds[0])
        code = f"import os, sys; os.fstat({fds[0]})"
        child = subprocess.run([sys.executable, "-c", code], close_fds=False, capture_output=True, timeout=30)
        assert child.returncode != 0 and b"Bad file descriptor" in child.stderr
        _answer_through(fds, read_fds)
    finally:
        server_end.close()
        worker_end.close()


def test_a_request_without_its_descriptor_is_a_protocol_error():
    server_end, worker_end = socket.socketpair()
    try:
        server_end.sendall(b"".join(encode_request("lost", b"{}")))
        with pytest.raises(ProtocolError, match="REQUEST frame needs 1 descriptor"):
            MessageReader(worker_end).recv()
    finally:
        server_end.close()
        worker_end.close()


def test_more_descriptors_than_the_reader_takes_is_a_protocol_error():
    """MSG_CTRUNC: the kernel drops what does not fit; the reader says so and closes what it got."""
    server_end, worker_end = socket.socketpair()
    pipes = [os.pipe() for _ in range(8)]
    try:
        head, bodies = encode_batch([(f"r{i}", b"{}") for i in range(8)])
        socket.send_fds(server_end, [head, bodies], [write_fd for _, write_fd in pipes])
        for _, write_fd in pipes:
            os.close(write_fd)
        with pytest.raises(ProtocolError, match="more than the 2 descriptors"):
            MessageReader(worker_end, max_fds=2).recv()
        # Every write end is closed now (the kernel's and the reader's): each pipe reads end of file.
        assert [os.read(read_fd, 1) for read_fd, _ in pipes] == [b""] * 8
    finally:
        for read_fd, _ in pipes:
            os.close(read_fd)
        server_end.close()
        worker_end.close()


def test_end_of_file_closes_the_descriptors_still_held():
    """A REQUEST cut short by the server closing: its pipe's write end does not leak in the worker."""
    server_end, worker_end = socket.socketpair()
    read_fd, write_fd = os.pipe()
    try:
        head, _ = encode_request("cut", b"b" * 100)
        socket.send_fds(server_end, [head], [write_fd])
        os.close(write_fd)
        server_end.close()
        with pytest.raises(ChannelClosed, match="middle of a frame"):
            MessageReader(worker_end).recv()
        assert os.read(read_fd, 1) == b""  # no write end left open anywhere
    finally:
        os.close(read_fd)
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
