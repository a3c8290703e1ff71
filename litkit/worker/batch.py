"""Worker side of dynamic batching: a group of requests through ``batch``, ``predict``, ``unbatch``.

The server sends one ``BATCH`` frame carrying the requests and one response pipe per request (see
``litkit.wire.protocol``). Each request is decoded on its own (a bad body fails that request alone),
the decoded inputs go through ``api.batch`` and one ``predict`` call, and ``api.unbatch`` splits
the output back, one item per request; each request then gets its own ``encode_response`` and its
own answer on its own pipe, so cancellation stays per request.

Streams: ``predict`` yields batched items; each one is unbatched and request *i* receives its
share through an iterator handed to its ``encode_response``, exactly as in a non-batched stream.
A client that leaves stops receiving (its pipe write fails, its ``encode_response`` iterator is
closed); ``predict``'s generator is closed, so ``GeneratorExit`` reaches it, once every client of
the batch has left.

Stdlib only: this module runs in worker processes.
"""

from __future__ import annotations

import collections
import traceback
from typing import Any, Iterator, NamedTuple, Protocol

from ..api import LitAPI
from ..cancellation import _set_current
from ..errors import HTTPError
from ..wire.encoding import decode_body, encode_chunk, encode_decode_error, encode_error, encode_json
from ..wire.protocol import Kind
from .hooks import call_hook, decode_input

__all__ = ["close_generator", "run_batch"]


class Channel(Protocol):
    """What the worker's response channel offers (``litkit.worker.main.ResponseChannel``)."""

    def is_cancelled(self) -> bool: ...

    def send(self, kind: Kind, payload: bytes = b"") -> None: ...

    def close(self) -> None: ...


class _Live(NamedTuple):
    """A request of the batch that goes on: its channel, its decoded input, the spec's context
    (None without a spec), and the dict its hooks share as ``context``."""

    channel: Channel
    x: Any
    context: Any
    hook_context: dict[str, Any]


class _AllGone:
    """``litkit.cancelled()`` during a batch: True once every client of the batch has left."""

    def __init__(self, channels: list[Channel]) -> None:
        self.channels = channels

    def is_cancelled(self) -> bool:
        return all(channel.is_cancelled() for channel in self.channels)


def run_batch(api: LitAPI, bodies: list[bytes], channels: list[Channel], stream: bool, spec: Any = None, request_ids: list[str] | None = None) -> None:
    """Answer every request of a batch on its own channel; close every channel on the way out.

    With a (batchable) ``spec``, each body is validated by it and each answer built by it.
    """
    try:
        live = _decode_each(api, bodies, channels, spec, request_ids or [""] * len(bodies))
        if live:
            _set_current(_AllGone([request.channel for request in live]))
            if stream:
                _stream_batch(api, live)
            else:
                _predict_batch(api, live, spec)
    finally:
        _set_current(None)
        for channel in channels:
            channel.close()


def _decode_each(api: LitAPI, bodies: list[bytes], channels: list[Channel], spec: Any, request_ids: list[str]) -> list[_Live]:
    """Decode each request; answer the ones that fail; skip the ones whose client already left."""
    live = []
    for body, channel, request_id in zip(bodies, channels, request_ids):
        if channel.is_cancelled():
            continue
        try:
            request = decode_body(body)
            context, hook_context = None, {}
            if spec is not None:
                request, _ = spec.decode_request(request)
                spec.check_batched(request)
                context = spec.context(request, request_id)
                spec.populate_context(hook_context, request)
            live.append(_Live(channel, decode_input(api, spec, request, hook_context), context, hook_context))
        except Exception as error:  # noqa: BLE001 - this request fails (400: its body), the others go on
            _send(channel, Kind.ERROR, encode_decode_error(error))
    return live


def _predict_batch(api: LitAPI, live: list[_Live], spec: Any) -> None:
    contexts = [request.hook_context for request in live]
    try:
        batched = call_hook(api, "batch", contexts, [request.x for request in live])
        outputs = _unbatch(api, call_hook(api, "predict", contexts, batched), len(live), contexts)
    except Exception as error:  # noqa: BLE001 - the whole batch failed: every request hears why
        payload = encode_error(error)
        for request in live:
            _send(request.channel, Kind.ERROR, payload)
        return
    for request, output in zip(live, outputs):
        channel = request.channel
        try:
            answer = call_hook(api, "encode_response", request.hook_context, output)
            if spec is not None:
                answer = spec.complete([answer], request.context)
            kind, payload = Kind.RESULT, encode_json(answer)
        except Exception as error:  # noqa: BLE001 - this request fails, the others go on
            kind, payload = Kind.ERROR, encode_error(error)
        _send(channel, kind, payload)


def _unbatch(api: LitAPI, output: Any, expected: int, contexts: list[dict[str, Any]]) -> list[Any]:
    """``api.unbatch(output)`` as a list, checked to hold one item per request."""
    items = call_hook(api, "unbatch", contexts, output)
    try:
        items = list(items)
    except TypeError:
        raise TypeError(f"unbatch must return a sequence with one item per request, got {type(items).__name__}") from None
    if len(items) != expected:
        raise HTTPError(
            500,
            f"batch size mismatch: expected {expected} outputs (one per request in the batch), got "
            f"{len(items)}; predict must return one output per input and unbatch must split it in order",
        )
    return items


class _Lanes:
    """Splits ``predict``'s batched stream into one iterator per request, pulled on demand."""

    def __init__(self, api: LitAPI, outputs: Iterator[Any], count: int, contexts: list[dict[str, Any]]) -> None:
        self.api = api
        self.contexts = contexts
        self.outputs = outputs
        self.buffers: list[collections.deque[Any] | None] = [collections.deque() for _ in range(count)]
        self.exhausted = False
        self.error: bytes | None = None  # the ERROR payload once predict or unbatch failed

    def lane(self, index: int) -> Iterator[Any]:
        while True:
            buffer = self.buffers[index]
            if buffer is None:
                return
            if not buffer and not self._advance():
                return
            yield buffer.popleft()

    def leave(self, index: int) -> None:
        self.buffers[index] = None  # a departed request stops collecting its share

    def _advance(self) -> bool:
        if self.exhausted:
            return False
        try:
            items = _unbatch(self.api, next(self.outputs), len(self.buffers), self.contexts)
        except StopIteration:
            self.exhausted = True
            return False
        except Exception as error:
            self.exhausted = True
            self.error = encode_error(error)
            raise
        for buffer, item in zip(self.buffers, items):
            if buffer is not None:
                buffer.append(item)
        return True


class _Stream:
    def __init__(self, index: int, channel: Channel, lane: Iterator[Any], chunks: Any) -> None:
        self.index = index
        self.channel = channel
        self.lane = lane
        self.chunks = chunks
        self.iterator = iter(chunks)

    def close(self) -> None:
        for generator in (self.iterator, self.chunks, self.lane):
            close_generator(generator)


def _stream_batch(api: LitAPI, live: list[_Live]) -> None:
    outputs: Any = None
    lanes: _Lanes | None = None
    streams: list[_Stream] = []
    started = False
    try:
        contexts = [request.hook_context for request in live]
        outputs = call_hook(api, "predict", contexts, call_hook(api, "batch", contexts, [request.x for request in live]))
        lanes = _Lanes(api, iter(outputs), len(live), contexts)
        for index, request in enumerate(live):
            channel = request.channel
            lane = lanes.lane(index)
            chunks = call_hook(api, "encode_response", request.hook_context, lane)
            if isinstance(chunks, (dict, str, bytes)) or not hasattr(chunks, "__iter__"):
                raise TypeError(
                    f"encode_response of a streaming endpoint must return an iterator of chunks, got "
                    f"{type(chunks).__name__}; write it as a generator: `for out in output: yield {{...}}`"
                )
            streams.append(_Stream(index, channel, lane, chunks))
        started = True
        while streams:
            for stream in list(streams):
                if not _step(stream, lanes):
                    streams.remove(stream)
                    lanes.leave(stream.index)
                    stream.close()
    except Exception as error:  # noqa: BLE001 - predict, unbatch or a setup step failed: every request hears why
        payload = (lanes.error if lanes is not None else None) or encode_error(error)
        unfinished = [stream.channel for stream in streams] if started else [request.channel for request in live]
        for channel in unfinished:
            _send(channel, Kind.ERROR, payload)
    finally:
        for stream in streams:
            stream.close()
        close_generator(outputs)  # every client has left, or the stream ended: GeneratorExit reaches predict


def _step(stream: _Stream, lanes: _Lanes) -> bool:
    """Send this request's next chunk; False once it is finished (END, its own error, or gone)."""
    try:
        chunk = encode_chunk(next(stream.iterator))
    except StopIteration:
        _send(stream.channel, Kind.END)
        return False
    except Exception as error:
        if lanes.error is not None:
            raise  # predict or unbatch failed: the whole batch ends
        _send(stream.channel, Kind.ERROR, encode_error(error))  # its own encode_response failed
        return False
    return _send(stream.channel, Kind.CHUNK, chunk)


def _send(channel: Channel, kind: Kind, payload: bytes = b"") -> bool:
    """Write a frame; False if this request's client has left."""
    try:
        channel.send(kind, payload)
    except OSError:  # BrokenPipeError: the server closed the pipe
        return False
    return True


def close_generator(obj: Any) -> None:
    """``close()`` a generator or iterator, if it has one: GeneratorExit reaches user code at its
    ``yield`` and its ``finally`` runs. An error there is printed (it lands in the worker's log)."""
    close = getattr(obj, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:  # noqa: BLE001 - e.g. a generator that yields in its finally
        traceback.print_exc()
