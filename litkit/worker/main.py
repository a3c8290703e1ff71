"""The worker process: load the API, run ``setup``, then run requests one at a time.

A ``BATCH`` frame (the server batches) runs as one group through ``litkit.worker.batch``; while a
joinable batch streams (``LitAPI.joinable``), the ``JOIN`` frames that arrive are read between two
of its steps, never waited for (``_Joining``), and a ``JOIN`` that comes after its batch ended
starts the next batch. An async API
(``async def predict`` or an async generator) runs on ``litkit.worker.async_loop`` instead of this loop.

Started by the server as ``python -m litkit.worker --control-fd FD --worker-id N``: a fresh
interpreter (never a fork), which imports neither the user's ``__main__`` (so a script without an
``if __name__ == "__main__":`` guard cannot start itself again) nor the HTTP stack (tornado) nor the
widget stack (ipywidgets). The wire protocol is in ``litkit.wire.protocol``; the hooks are called
through ``litkit.contract``, as a Ray Serve replica calls them.

Cancellation: every request comes with its own response pipe. When the server closes the read end
(client gone, timeout, operator), the next write here raises ``BrokenPipeError``; the worker then
stops sending the answer's frames and closes the answer, which ``close()``\\ s the
``encode_response`` and ``predict`` generators, so ``GeneratorExit`` reaches user code at its
``yield`` and its ``finally`` blocks run. Then the worker takes the next request.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import select
import socket
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, Generator

import cloudpickle

from ..api import LitAPI, is_async_api, set_log_sink
from ..cancellation import _set_current
from ..contract.answer import Frame, answer
from ..contract.batching import takes_joiners
from ..contract.hooks import set_device
from ..wire.protocol import ChannelClosed, Kind, MessageReader, ProtocolError, decode_batch, decode_request, encode_frame, send_message, write_all
from ..wire.sources import restore_code_origins
from .batch import Channel, run_batch
from .lifetime import die_with_parent

if TYPE_CHECKING:
    from .timeslice import StreamSlice

__all__ = ["main"]

# How long a worker whose server went away lets a running hook wind down before it exits.
PARENT_GONE_GRACE_S = 1.0


class ClientGone(BrokenPipeError):
    """The server closed this request's response pipe: the client left or the request was cancelled."""


# litkit's channels in this process: the control socket and every open response pipe. A forked
# child gets none of them (``_drop_channels_in_child``).
_CHANNEL_FDS: set[int] = set()


def _drop_channels_in_child() -> None:
    """In a child forked from a worker (a hook's ``os.fork()``, a fork ``multiprocessing.Process``):
    point litkit's descriptors at /dev/null. A copy of the control socket or of a response pipe
    held by a child would hide the worker's death from the server (no end of file) and keep a
    cancelled request's pipe open. /dev/null, not a close, so the numbers stay taken and no later
    close of a Python object hits an unrelated file."""
    if not _CHANNEL_FDS:
        return
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for fd in _CHANNEL_FDS:
            try:
                os.dup2(null, fd, inheritable=False)
            except OSError:
                pass  # closed meanwhile
    finally:
        os.close(null)
    _CHANNEL_FDS.clear()


class ResponseChannel:
    """The write end of one request's response pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        _CHANNEL_FDS.add(fd)
        self.broken = False
        self._poller = select.poll()
        # No events asked for: a pipe's write end reports POLLERR once no reader is left.
        self._poller.register(fd, 0)

    def is_cancelled(self) -> bool:
        if not self.broken:
            try:
                events = self._poller.poll(0)
            except RuntimeError:
                # "concurrent poll() invocation": a hook's own thread is asking at this very moment
                # (one poll object serves one caller at a time); ask with a poller of our own.
                poller = select.poll()
                poller.register(self.fd, 0)
                events = poller.poll(0)
            if events:
                self.broken = True
        return self.broken

    def send(self, kind: Kind, payload: bytes = b"") -> None:
        try:
            write_all(self.fd, encode_frame(kind, payload))
        except BrokenPipeError as error:
            self.broken = True
            raise ClientGone("the server closed this request's response pipe") from error

    def close(self) -> None:
        _CHANNEL_FDS.discard(self.fd)
        os.close(self.fd)


class Worker:
    """One worker's life: handshake, then the request loop."""

    def __init__(self, control: socket.socket, worker_id: int) -> None:
        self.control = control
        self.messages = MessageReader(control)
        self.worker_id = worker_id
        self.stream = False
        self.spec: Any = None  # a litkit.specs.Spec, when the endpoint speaks another protocol
        self.stream_slice: StreamSlice | None = None  # the slice to stream with (litkit.worker.timeslice)
        self.joining: _Joining | None = None  # set when the API's batched streams take joiners (LitAPI.joinable)
        # LOG frames may come from a hook's own threads; DONE, READY come from the loop's thread alone.
        self._log_lock = threading.Lock()

    def run(self) -> int:
        _watch_for_server_exit(self.control)
        api = self._start()
        if api is None:
            return 1
        if is_async_api(api):
            # Imported here: asyncio costs every worker about 2 MiB and 20-50 ms of start-up.
            from .async_loop import AsyncRequestLoop

            return AsyncRequestLoop(api, self.control, self.messages, self.stream, ResponseChannel, self.spec).run()
        while True:
            try:
                kind, payload, fds = self.messages.recv()
            except (ChannelClosed, ConnectionError):
                return 0  # the server closed the control socket: stop
            if kind == Kind.BATCH:
                done = "\n".join(self._handle_batch(api, decode_batch(payload), fds))
            elif kind == Kind.JOIN and self.joining is not None and len(fds) == 1:
                # It came after the batch it was sent to had ended: it starts the next one.
                done = "\n".join(self._handle_batch(api, [decode_request(payload)], fds))
            elif kind != Kind.REQUEST or len(fds) != 1:
                raise ProtocolError(f"protocol error: expected REQUEST with one fd, got {kind!r} with {len(fds)} fds")
            else:
                done, body = decode_request(payload)
                self._handle(api, done, body, ResponseChannel(fds[0]))
            try:
                send_message(self.control, Kind.DONE, done.encode())
            except OSError:
                return 0

    def _start(self) -> LitAPI | None:
        """Receive INIT, load the API, run setup; report READY (and return the API) or START_FAILED."""
        kind, payload, _fds = self.messages.recv()
        if kind != Kind.INIT:
            raise ProtocolError(f"protocol error: expected INIT, got {kind!r}")
        init = pickle.loads(payload)
        sys.path[:] = init["sys_path"]
        try:
            stage = "loading the API object (cloudpickle.loads)"
            api = cloudpickle.loads(init["api"])
            restore_code_origins(api, init.get("code_origins"))  # tracebacks name the user's files
            self.stream = init["stream"]
            if init.get("spec") is not None:
                stage = "loading the endpoint's spec (cloudpickle.loads)"
                self.spec = cloudpickle.loads(init["spec"])
            set_log_sink(self._send_log)  # self.log(key, value), from setup on
            stage = f"reading {type(api).__name__}.joinable"
            joinable = self.stream and init.get("max_batch_size", 1) > 1 and not is_async_api(api) and takes_joiners(api)
            stage = f"{type(api).__name__}.setup({init['device']!r})"
            set_device(api, init["device"])
            api.setup(init["device"])
        except BaseException as error:  # noqa: BLE001 - every failure must reach the server
            self._start_failed(stage, error)
            return None
        if self.stream:
            from .timeslice import StreamSlice  # ctypes: only a streaming worker loads it

            self.stream_slice = StreamSlice.for_this_thread()
        if joinable:
            self.joining = _Joining(self)
        try:
            send_message(self.control, Kind.READY, json.dumps({"pid": os.getpid(), "joinable": self.joining is not None}).encode())
        except OSError:
            return None  # the server went away while this worker started: just exit
        return api

    def _start_failed(self, stage: str, error: BaseException) -> None:
        """Report START_FAILED: which stage raised what, and the user's part of the traceback."""
        report = {"reason": f"{stage} raised {type(error).__name__}: {error}", "traceback": _user_traceback(error)}
        try:
            send_message(self.control, Kind.START_FAILED, json.dumps(report).encode())
        except OSError:
            pass  # the server stopped waiting (another worker failed first): just exit

    def _send_log(self, key: str, value: Any) -> None:
        """``LitAPI.log``: one LOG frame on the control socket (any thread: async hooks too)."""
        try:
            payload = json.dumps({"key": key, "value": value}, allow_nan=False).encode()
        except (TypeError, ValueError) as error:
            raise TypeError(f"self.log({key!r}, value): the value must be JSON-encodable (a number, str, bool, None, list or dict); {error}") from None
        with self._log_lock:
            send_message(self.control, Kind.LOG, payload)

    def _handle_batch(self, api: LitAPI, requests: list[tuple[str, bytes]], fds: list[int]) -> list[str]:
        """Run a batch (see ``litkit.worker.batch``); return the ids DONE reports: every request it
        ran, those that joined it included."""
        if len(fds) != len(requests):
            raise ProtocolError(f"protocol error: BATCH of {len(requests)} requests came with {len(fds)} fds")
        channels: list[Channel] = [ResponseChannel(fd) for fd in fds]
        return run_batch(api, [body for _, body in requests], channels, self.stream, self.spec, [request_id for request_id, _ in requests], self.joining)

    def _handle(self, api: LitAPI, request_id: str, body: bytes, channel: ResponseChannel) -> None:
        _set_current(channel)
        try:
            if not channel.is_cancelled():  # the client may have left while this was in transit
                frames = answer(api, self.spec, self.stream, body, request_id)
                if self.stream_slice is None:
                    _send_frames(channel, frames)
                else:
                    with self.stream_slice:  # the client reading this stream preempts us (litkit.worker.timeslice)
                        _send_frames(channel, frames)
        finally:
            _set_current(None)
            channel.close()


class _Joining:
    """A joinable batch's link to the server (``litkit.worker.batch.Joining``): the ``JOIN`` frames
    waiting on the control socket, read between two steps without waiting for one, and a ``LEFT``
    frame for each request that leaves the batch."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._poller = select.poll()
        self._poller.register(worker.control.fileno(), select.POLLIN)
        self._closed = False  # the server closed the control socket: no more joiners

    def arrived(self) -> list[tuple[str, bytes, Channel]]:
        joined: list[tuple[str, bytes, Channel]] = []
        messages = self.worker.messages
        # A frame whose first bytes are here is read whole (the rest is on its way, sent in one message).
        while not self._closed and (messages.buffered() or self._poller.poll(0)):
            try:
                kind, payload, fds = messages.recv()
            except (ChannelClosed, ConnectionError):
                self._closed = True  # the server is gone: the batch ends as the watch thread exits the process
                break
            if kind != Kind.JOIN or len(fds) != 1:
                raise ProtocolError(f"protocol error: a running batch takes JOIN frames with one fd, got {kind!r} with {len(fds)} fds")
            request_id, body = decode_request(payload)
            joined.append((request_id, body, ResponseChannel(fds[0])))
        return joined

    def left(self, request_id: str) -> None:
        try:
            with self.worker._log_lock:  # a hook's thread may be sending a LOG frame
                send_message(self.worker.control, Kind.LEFT, request_id.encode())
        except OSError:
            pass  # the server is gone: nobody needs to know


def _send_frames(channel: ResponseChannel, frames: Generator[Frame, None, None]) -> None:
    """Send each frame of the answer; once the client has left, stop and close the answer, which
    closes the user's generators (``litkit.contract.answer``)."""
    try:
        for kind, payload in frames:
            channel.send(kind, payload)
    except ClientGone:
        pass  # cancelled: closing the frames below closes the generators
    finally:
        frames.close()


_LITKIT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _user_traceback(error: BaseException) -> str:
    """``error``'s traceback without litkit's own frames (the worker loop calling ``setup``): what
    is left is the user's code, and what it called."""
    report = traceback.TracebackException.from_exception(error)
    seen = set()
    part: traceback.TracebackException | None = report
    while part is not None and id(part) not in seen:
        seen.add(id(part))
        part.stack = traceback.StackSummary.from_list([frame for frame in part.stack if not frame.filename.startswith(_LITKIT_DIR)])
        part = part.__cause__ or part.__context__
    return "".join(report.format())


def _watch_for_server_exit(control: socket.socket) -> None:
    """Exit soon after the serving process is gone, even while a hook is busy.

    The kernel hangs up our end of the control socket when the server closes its end or its process
    dies (kill -9 included). The main thread only reads that socket between requests, so a daemon
    thread waits for the hang-up, gives a running hook a moment to finish, then ends the process.
    """

    def watch() -> None:
        poller = select.poll()
        poller.register(control.fileno(), select.POLLRDHUP)
        while True:
            events = poller.poll()
            if any(mask & (select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, mask in events):
                break
        time.sleep(PARENT_GONE_GRACE_S)
        os._exit(0)

    threading.Thread(target=watch, name="litkit-server-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m litkit.worker", description="litkit worker process (started by the server)")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--worker-id", type=int, required=True)
    parser.add_argument("--server-pid", type=int, default=None)
    args = parser.parse_args(argv)
    die_with_parent(args.server_pid)
    control = socket.socket(fileno=args.control_fd)
    os.set_inheritable(args.control_fd, False)  # a subprocess started by a hook must not hold it open
    _CHANNEL_FDS.add(args.control_fd)  # nor a process it forks
    os.register_at_fork(after_in_child=_drop_channels_in_child)
    try:
        return Worker(control, args.worker_id).run()
    finally:
        control.close()

