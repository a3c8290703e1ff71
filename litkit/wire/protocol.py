"""The wire protocol between the serving process and its workers, all of it in one place.

Two kinds of channel, both inherited or handed over as file descriptors, never a listening socket:

* **Control socket**: one ``AF_UNIX`` stream socket pair per worker, made by the server; the
  worker's end is inherited at spawn. Server to worker: ``INIT`` (once), then ``REQUEST`` each time
  the worker is free (for a non-streaming endpoint, also one request ahead while it is busy), or
  ``BATCH`` (several requests at once) when the server batches. Worker to server: ``READY`` or
  ``START_FAILED`` (once, before ``start_timeout``), then ``DONE`` after each ``REQUEST`` (including
  one it skipped because its pipe was already closed) or ``BATCH`` (naming every request the
  batch ran, one per line). A worker whose API takes joiners (``LitAPI.joinable``, a streaming
  endpoint with ``max_batch_size`` above 1) says so in ``READY``; while its batch streams, the server
  may send it ``JOIN`` frames (a request, with its pipe, to add to the running batch at its next
  step), and the worker sends ``LEFT`` (the request's id) as each request of that batch leaves
  it, so the server knows the batch has room. A ``JOIN`` that arrives after its batch ended starts
  the next batch. A worker serving an async API
  with ``max_concurrency`` above 1 gets up to that many ``REQUEST`` frames before the first
  ``DONE``, and its ``DONE`` frames may come in any order. The server stops a worker by closing its
  end; the worker sees end-of-file, or a hang-up while busy, and exits. If the serving process
  dies the kernel closes its end, which is how workers notice (see ``litkit.worker.main``).

* **Response pipe**: one ``os.pipe()`` per request. The server sends the write end with the
  ``REQUEST`` message (``SCM_RIGHTS``), closes its own copy at once, and keeps the read end. The
  worker receives it close-on-exec (``MSG_CMSG_CLOEXEC``, see ``MessageReader``), so a subprocess
  a hook starts never holds it open. The worker writes ``CHUNK`` frames (streams) or one ``RESULT``, or an ``ERROR``, then ``END`` and
  closes it. When the client leaves, the server closes the read end: the worker's next write
  raises ``BrokenPipeError`` and ``litkit.cancelled()`` turns True. A ``BATCH`` carries one pipe
  per request, in the order of its entries, so each request is answered and cancelled on its own.

Every message is a frame: one byte of kind, four bytes of payload length (network order), the
payload. ``REQUEST``'s (and ``JOIN``'s) payload is a two-byte id length, the request id (the server's own key for
the request, unique in the serving process; ``DONE`` names it back), then the raw HTTP body,
which the worker parses (JSON is decoded once, in the worker). ``BATCH``'s payload is a two-byte
count, then per request a two-byte id length, the id and a four-byte body length, then the bodies
one after another. ``INIT``'s payload is a stdlib
pickle of plain data plus the cloudpickled API (and spec) bytes; it only ever travels over the inherited
socket. Every other payload is JSON or raw bytes.

* **Host socket**: one ``AF_UNIX`` socket pair between the caller's interpreter and the one that
  runs a server, a sub-interpreter in the same process (Python 3.13+) or a process of its own
  (3.10-3.12) (``litkit.server.host``). Caller to
  server: ``HOST_INIT`` (once: the endpoints' plans, cloudpickled, with the listening sockets'
  descriptor numbers), then ``HOST_CALL`` (``status``, ``cancel``, ``stop``, ``listen_output``,
  ``replace``). Server to caller: ``HOST_REPLY`` to each call, ``HOST_EVENT`` for what the caller
  learns unasked (started, a log record, a worker's output line, the final status, ...). The calls
  and events are named kinds, ``Call`` and ``Event`` in ``litkit.server.host_boundary``. Both ends are one
  process, so these payloads are stdlib pickles.

Stdlib only: this module is imported by worker processes.
"""

from __future__ import annotations

import array
import collections
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
    "MessageReader",
    "ProtocolError",
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
_FD = array.array("i")  # a descriptor's C type, as SCM_RIGHTS carries it
# Received descriptors start close-on-exec (Linux); 0 where the platform lacks the flag.
_CMSG_CLOEXEC = int(getattr(socket, "MSG_CMSG_CLOEXEC", 0))
# A plain int: ``flags & socket.MSG_CTRUNC`` goes through enum.Flag and costs a microsecond per read.
_CTRUNC = int(socket.MSG_CTRUNC)


class Kind(enum.IntEnum):
    # control socket, server -> worker
    INIT = 1
    REQUEST = 2
    BATCH = 3
    JOIN = 4  # a request to add to the running (joinable) batch: like REQUEST, one fd
    # control socket, worker -> server
    READY = 10
    START_FAILED = 11
    DONE = 12
    LOG = 13  # self.log(key, value) in a hook: JSON {"key", "value"}
    LEFT = 14  # a request of a joinable batch left it (finished, gone or failed): its id
    # response pipe, worker -> server
    CHUNK = 20
    RESULT = 21
    ERROR = 22
    END = 23
    # host socket, the caller's interpreter <-> the server's own sub-interpreter or process (litkit.server.host)
    HOST_INIT = 30
    HOST_CALL = 31
    HOST_REPLY = 32
    HOST_EVENT = 33


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


def encode_request(request_id: str, body: bytes, kind: Kind = Kind.REQUEST) -> tuple[bytes, bytes]:
    """Split a ``REQUEST`` frame (or, ``kind``, a ``JOIN``) into (head, body): the head travels with the pipe's fd."""
    id_bytes = request_id.encode()
    prefix = _ID_LENGTH.pack(len(id_bytes)) + id_bytes
    head = HEADER.pack(kind, len(prefix) + len(body)) + prefix
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


class ProtocolError(RuntimeError):
    """The other end broke the wire protocol: a frame of unknown kind, without its descriptors, or with too many."""


class MessageReader:
    """Blocking, buffered reader of the frames (and descriptors) arriving on a control socket (worker side).

    One ``recvmsg`` takes whatever the socket holds, header and payload together (sometimes the
    start of the next frame too): one system call per frame, not one for the header and one for
    the payload. The
    descriptors that come with the bytes wait in a queue until their frame is complete: a
    ``REQUEST`` takes one, a ``BATCH`` one per request, any other frame none. The kernel hands
    descriptors over with the bytes that carry them (the server sends each frame and its descriptors
    in one ``sendmsg``) and ends a read right after such bytes, so a frame's descriptors are always
    here by the time its first byte is; if they are not, the other end broke the protocol.

    Descriptors are received with ``MSG_CMSG_CLOEXEC``: close-on-exec from the start, so a
    subprocess a hook starts never holds a request's pipe open (no ``os.set_inheritable`` call).

    Not thread-safe: one thread reads.
    """

    def __init__(self, sock: socket.socket, buffer_size: int = 64 * 1024, max_fds: int = MAX_FDS_PER_MESSAGE) -> None:
        """
        Args:
            sock: a blocking stream socket.
            buffer_size: bytes one read takes at most; a larger frame's payload is read straight
                into a buffer of its own size.
            max_fds: descriptors one read can take; more raise ``ProtocolError``.
        """
        self._sock = sock
        self._buffer = bytearray(buffer_size)
        self._view = memoryview(self._buffer)
        self._start = 0  # the unread bytes are self._buffer[self._start : self._end]
        self._end = 0
        self._fds: collections.deque[int] = collections.deque()
        self._max_fds = max_fds
        self._ancillary_size = socket.CMSG_SPACE(max_fds * _FD.itemsize)

    def recv(self) -> tuple[Kind, bytes, list[int]]:
        """The next frame: its kind, its payload, and the descriptors that came with it.

        Raises:
            ChannelClosed: the other end closed before a whole frame arrived (the descriptors
                still held are closed).
            ProtocolError: a frame of unknown kind, or without its descriptors, or a read that
                brought more than ``max_fds`` (all the descriptors held are closed).
        """
        while self._end - self._start < HEADER.size:
            self._fill()
        kind, length = HEADER.unpack_from(self._buffer, self._start)
        if kind not in _KINDS:
            self.close()
            raise ProtocolError(
                f"protocol error: unknown frame kind {kind} on the control socket; the server and its "
                "workers must run the same litkit version"
            )
        if HEADER.size + length <= len(self._buffer):
            while self._end - self._start < HEADER.size + length:
                self._fill()
            payload_start = self._start + HEADER.size
            self._start = payload_start + length
            payload = bytes(self._view[payload_start : self._start])
            if self._start == self._end:
                self._start = self._end = 0
        else:
            payload = self._recv_large(length)
        return _KINDS[kind], payload, self._take_fds(kind, payload)

    def _fill(self) -> None:
        """Read what the socket holds (blocking until something does) after the unread bytes."""
        if self._start:
            unread = self._end - self._start
            self._view[:unread] = self._view[self._start : self._end]
            self._start, self._end = 0, unread
        self._end += self._recv_into(self._view[self._end :])

    def _recv_large(self, length: int) -> bytes:
        """A payload larger than the buffer: what is buffered, then the rest read in place."""
        payload = bytearray(length)
        view = memoryview(payload)
        # The buffer holds the header and the start of the payload, nothing past it.
        payload_start = self._start + HEADER.size
        received = self._end - payload_start
        view[:received] = self._view[payload_start : self._end]
        while received < length:
            received += self._recv_into(view[received:])
        self._start = self._end = 0
        return bytes(payload)

    def _recv_into(self, view: memoryview) -> int:
        """One ``recvmsg`` into ``view``; queue the descriptors that came along; the byte count."""
        n, ancillary, flags, _address = self._sock.recvmsg_into([view], self._ancillary_size, _CMSG_CLOEXEC)
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                self._fds.extend(fds)
        if flags & _CTRUNC:
            self.close()
            raise ProtocolError(
                f"protocol error: a message carried more than the {self._max_fds} descriptors this reader "
                "takes at once (the kernel closed the rest); send fewer per message or raise max_fds"
            )
        if n == 0:
            self.close()
            if self._end > self._start:
                raise ChannelClosed("control socket closed in the middle of a frame")
            raise ChannelClosed("control socket closed")
        return n

    def buffered(self) -> bool:
        """Whether bytes already read wait here (the start of a frame, or a whole one): a
        ``poll`` of the socket alone would miss a frame that came in the same read as the last."""
        return self._end > self._start

    def _take_fds(self, kind: int, payload: bytes) -> list[int]:
        if kind in (Kind.REQUEST, Kind.JOIN):
            wanted = 1
        elif kind == Kind.BATCH:
            (wanted,) = _ID_LENGTH.unpack_from(payload)
        else:
            return []
        if len(self._fds) < wanted:
            held = len(self._fds)
            self.close()
            raise ProtocolError(
                f"protocol error: a {_KINDS[kind].name} frame needs {wanted} descriptor(s) sent with its "
                f"first byte, but {held} arrived; the server must send each frame and its pipes in one sendmsg"
            )
        return [self._fds.popleft() for _ in range(wanted)]

    def close(self) -> None:
        """Close the descriptors received but not yet handed out (the socket stays open)."""
        while self._fds:
            os.close(self._fds.popleft())


def write_all(fd: int, data: bytes) -> None:
    """Write every byte to a blocking fd (a pipe may accept a large write in pieces)."""
    written = os.write(fd, data)
    if written == len(data):
        return  # the usual case: no memoryview to build
    view = memoryview(data)[written:]
    while view:
        written = os.write(fd, view)
        view = view[written:]
