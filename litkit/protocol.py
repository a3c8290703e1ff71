"""The wire protocol between the serving process and its workers, all of it in one place.

Two kinds of channel, both inherited or handed over as file descriptors, never a listening socket:

* **Control socket**: one ``AF_UNIX`` stream socket pair per worker, made by the server; the
  worker's end is inherited at spawn. Server to worker: ``INIT`` (once), then ``REQUEST`` each time
  the worker is free (for a non-streaming endpoint, also one request ahead while it is busy), or
  ``BATCH`` (several requests at once) when the server batches. Worker to server: ``READY`` or
  ``START_FAILED`` (once, before ``start_timeout``), then ``DONE`` after each ``REQUEST`` (including
  one it skipped because its pipe was already closed) or ``BATCH``. A worker serving an async API
  with ``max_concurrency`` above 1 gets up to that many ``REQUEST`` frames before the first
  ``DONE``, and its ``DONE`` frames may come in any order. The server stops a worker by closing its
  end; the worker sees end-of-file, or a hang-up while busy, and exits. If the serving process
  dies the kernel closes its end, which is how workers notice (see ``litkit.worker``).

* **Response pipe**: one ``os.pipe()`` per request. The server sends the write end with the
  ``REQUEST`` message (``SCM_RIGHTS``), closes its own copy at once, and keeps the read end. The
  worker writes ``CHUNK`` frames (streams) or one ``RESULT``, or an ``ERROR``, then ``END`` and
  closes it. When the client leaves, the server closes the read end: the worker's next write
  raises ``BrokenPipeError`` and ``litkit.cancelled()`` turns True. A ``BATCH`` carries one pipe
  per request, in the order of its entries, so each request is answered and cancelled on its own.

Every message is a frame: one byte of kind, four bytes of payload length (network order), the
payload. ``REQUEST``'s payload is a two-byte id length, the request id, then the raw HTTP body,
which the worker parses (JSON is decoded once, in the worker). ``BATCH``'s payload is a two-byte
count, then per request a two-byte id length, the id and a four-byte body length, then the bodies
one after another. ``INIT``'s payload is a stdlib
pickle of plain data plus the cloudpickled API (and spec) bytes; it only ever travels over the inherited
socket. Every other payload is JSON or raw bytes.

Stdlib only: this module is imported by worker processes.
"""

from __future__ import annotations

import enum
import os
import socket
import struct

__all__ = [
    "Kind",
    "HEADER",
    "encode_frame",
    "FrameParser",
    "encode_request",
    "decode_request",
    "encode_batch",
    "decode_batch",
    "MAX_FDS_PER_MESSAGE",
    "send_message",
    "recv_message",
    "write_all",
    "ChannelClosed",
]

HEADER = struct.Struct("!BI")
_ID_LENGTH = struct.Struct("!H")
_BATCH_ENTRY = struct.Struct("!HI")  # id length, body length
MAX_FRAME = 2**32 - 1
# The kernel passes at most this many descriptors in one message (SCM_MAX_FD on Linux), which
# bounds how many requests one BATCH frame can carry.
MAX_FDS_PER_MESSAGE = 253


class Kind(enum.IntEnum):
    # control socket, server -> worker
    INIT = 1
    REQUEST = 2
    BATCH = 3
    # control socket, worker -> server
    READY = 10
    START_FAILED = 11
    DONE = 12
    # response pipe, worker -> server
    CHUNK = 20
    RESULT = 21
    ERROR = 22
    END = 23


_KINDS = {kind.value: kind for kind in Kind}  # a dict lookup is much cheaper than Kind(value)


class ChannelClosed(EOFError):
    """The other end of a control socket or pipe closed (cleanly or because its process died)."""


def encode_frame(kind: Kind, payload: bytes = b"") -> bytes:
    """One frame: kind, length, payload."""
    if len(payload) > MAX_FRAME:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds the {MAX_FRAME}-byte limit")
    return HEADER.pack(kind, len(payload)) + payload


class FrameParser:
    """Incremental frame decoder for bytes that arrive in arbitrary pieces."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes, limit: int | None = None) -> list[tuple[Kind, bytes]]:
        """Add bytes; return the frames now complete, in order, at most ``limit`` of them.

        Frames past the limit stay buffered: ``feed(b"")`` returns them later.
        """
        buffer = self._buffer
        buffer += data
        frames: list[tuple[Kind, bytes]] = []
        offset = 0
        end = len(buffer)
        while end - offset >= HEADER.size and (limit is None or len(frames) < limit):
            kind, length = HEADER.unpack_from(buffer, offset)
            start = offset + HEADER.size
            if end - start < length:
                break
            frames.append((_KINDS[kind], bytes(buffer[start : start + length])))
            offset = start + length
        if offset:
            del buffer[:offset]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole frame."""
        return len(self._buffer)


def encode_request(request_id: str, body: bytes) -> tuple[bytes, bytes]:
    """Split a ``REQUEST`` frame into (head, body): the head travels with the pipe's fd."""
    id_bytes = request_id.encode()
    prefix = _ID_LENGTH.pack(len(id_bytes)) + id_bytes
    head = HEADER.pack(Kind.REQUEST, len(prefix) + len(body)) + prefix
    return head, body


def decode_request(payload: bytes) -> tuple[str, bytes]:
    """The request id and raw body of a ``REQUEST`` payload."""
    (id_length,) = _ID_LENGTH.unpack_from(payload)
    start = _ID_LENGTH.size
    return payload[start : start + id_length].decode(), payload[start + id_length :]


def encode_batch(requests: list[tuple[str, bytes]]) -> tuple[bytes, bytes]:
    """Split a ``BATCH`` frame of (request id, body) pairs into (head, bodies); the head travels
    with the pipes' fds, one per request in the same order."""
    table = [_ID_LENGTH.pack(len(requests))]
    for request_id, body in requests:
        id_bytes = request_id.encode()
        table.append(_BATCH_ENTRY.pack(len(id_bytes), len(body)) + id_bytes)
    prefix = b"".join(table)
    bodies = b"".join(body for _, body in requests)
    head = HEADER.pack(Kind.BATCH, len(prefix) + len(bodies)) + prefix
    return head, bodies


def decode_batch(payload: bytes) -> list[tuple[str, bytes]]:
    """The (request id, raw body) pairs of a ``BATCH`` payload, in order."""
    (count,) = _ID_LENGTH.unpack_from(payload)
    offset = _ID_LENGTH.size
    entries = []
    for _ in range(count):
        id_length, body_length = _BATCH_ENTRY.unpack_from(payload, offset)
        offset += _BATCH_ENTRY.size
        entries.append((payload[offset : offset + id_length].decode(), body_length))
        offset += id_length
    requests = []
    for request_id, body_length in entries:
        requests.append((request_id, payload[offset : offset + body_length]))
        offset += body_length
    return requests


def send_message(sock: socket.socket, kind: Kind, payload: bytes = b"") -> None:
    """Blocking send of one frame (worker side)."""
    sock.sendall(encode_frame(kind, payload))


def recv_message(sock: socket.socket, max_fds: int = 4) -> tuple[Kind, bytes, list[int]]:
    """Blocking receive of one frame and up to ``max_fds`` file descriptors sent with it (worker side).

    Raises:
        ChannelClosed: the other end closed before a whole frame arrived.
    """
    fds: list[int] = []
    header = bytearray()
    while len(header) < HEADER.size:
        # Read only the header with recvmsg: descriptors ride on the frame's first bytes.
        data, new_fds, _flags, _addr = socket.recv_fds(sock, HEADER.size - len(header), max_fds)
        fds.extend(new_fds)
        if not data:
            _close_all(fds)
            raise ChannelClosed("control socket closed")
        header += data
    kind, length = HEADER.unpack(header)
    payload = bytearray(length)
    view = memoryview(payload)
    received = 0
    while received < length:
        n = sock.recv_into(view[received:], length - received)
        if n == 0:
            _close_all(fds)
            raise ChannelClosed("control socket closed in the middle of a frame")
        received += n
    return Kind(kind), bytes(payload), fds


def write_all(fd: int, data: bytes) -> None:
    """Write every byte to a blocking fd (a pipe may accept a large write in pieces)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
