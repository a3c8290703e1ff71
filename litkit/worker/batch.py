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

Joining (``LitAPI.joinable``): between two steps of a batched stream, the requests the server sent
to join it (``Joining.arrived``) are decoded and appended to the list ``predict`` received (and to
the batch's contexts); each gets the next index, its own lane and its own pipe, and from the next
step on ``predict`` yields one item for it. ``Joining.left`` tells the server each time a request
leaves the batch, so that it knows the batch has room.

The hooks are called through ``litkit.contract`` (decoding, ``batch``/``predict``/``unbatch``, the
per-request lanes of a batched stream); this module drives them over the batch's pipes.

Stdlib only: this module runs in worker processes.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, NamedTuple, Protocol

from ..api import LitAPI
from ..cancellation import _BatchRows, _set_current
from ..contract.answer import Decoded, chunks_of, decode, encode_single
from ..contract.batching import Lanes, litserve_steps, one_per_request, predicted
from ..contract.conventions import follows_litserve, litserve_chunk
from ..contract.hooks import call_hook, close_quietly
from ..wire.encoding import encode_chunk, encode_decode_error, encode_error, encode_json
from ..wire.protocol import Kind

__all__ = ["Joining", "run_batch"]


class Channel(Protocol):
    """What the worker's response channel offers (``litkit.worker.main.ResponseChannel``)."""

    def is_cancelled(self) -> bool: ...

    def send(self, kind: Kind, payload: bytes = b"") -> None: ...

    def close(self) -> None: ...


class Joining(Protocol):
    """A joinable batch's link to the server (``litkit.worker.main``)."""

    def arrived(self) -> list[tuple[str, bytes, Channel]]:
        """The requests (id, body, channel) sent to join the batch since the last call; never waits for one."""
        ...

    def left(self, request_id: str) -> None:
        """Request ``request_id`` has left the batch (finished, gone, or failed)."""
        ...


class _Live(NamedTuple):
    """A request of the batch that goes on: its id, its channel and what ``decode`` made of it."""

    request_id: str
    channel: Channel
    decoded: Decoded


def run_batch(
    api: LitAPI, bodies: list[bytes], channels: list[Channel], stream: bool, spec: Any = None, request_ids: list[str] | None = None,
    joining: Joining | None = None,
) -> list[str]:
    """Answer every request of a batch on its own channel; close every channel on the way out.
    Returns the ids of every request the batch ran: its own and, with ``joining`` (a joinable
    batched stream), those that joined it.

    With a (batchable) ``spec``, each body is validated by it and each answer built by it.
    """
    ids = list(request_ids or [""] * len(bodies))
    left = joining.left if joining is not None and stream else None
    try:
        live = _decode_each(api, bodies, channels, stream, spec, ids, left)
        if live:
            rows = _BatchRows([request.channel for request in live])
            _set_current(rows)
            if stream:
                joiners = _Joiners(api, spec, joining, rows, channels, ids) if joining is not None else None
                _stream_batch(api, live, spec, follows_litserve(api), joiners)
            else:
                _predict_batch(api, live, spec)
    finally:
        _set_current(None)
        for channel in channels:
            channel.close()
    return ids


def _decode_each(
    api: LitAPI, bodies: list[bytes], channels: list[Channel], stream: bool, spec: Any, request_ids: list[str], left: Callable[[str], None] | None = None,
) -> list[_Live]:
    """Decode each request; answer the ones that fail; skip the ones whose client already left
    (``left``, when given, hears of each request that does not go on)."""
    live = []
    for body, channel, request_id in zip(bodies, channels, request_ids):
        if channel.is_cancelled():
            if left is not None:
                left(request_id)
            continue
        try:
            live.append(_Live(request_id, channel, decode(api, spec, stream, body, request_id, batched=True)))
        except Exception as error:  # noqa: BLE001 - this request fails (400: its body), the others go on
            _send(channel, Kind.ERROR, encode_decode_error(error))
            if left is not None:
                left(request_id)
    return live


class _Joiners:
    """The requests that join a running batched stream: decoded between two steps and appended to
    the batch's lists (``predict``'s inputs, the contexts, the rows ``litkit.cancelled(i)`` reads,
    the channels to close, the ids ``DONE`` names)."""

    def __init__(self, api: LitAPI, spec: Any, joining: Joining, rows: _BatchRows, channels: list[Channel], ids: list[str]) -> None:
        self.api = api
        self.spec = spec
        self.joining = joining
        self.rows = rows
        self.channels = channels
        self.ids = ids

    def check(self, inputs: Any) -> None:
        """``predict``'s input must be a list for requests to join it.

        Raises:
            TypeError: ``batch`` returned something else.
        """
        if not isinstance(inputs, list):
            name = type(self.api).__name__
            raise TypeError(
                f"{name}.joinable is True, so predict must receive a list that requests can join, but {name}.batch returned "
                f"{type(inputs).__name__}; return a list from batch (the default does for inputs that are not arrays), or leave joinable out"
            )

    def take(self, inputs: list[Any], contexts: list[Any]) -> list[_Live]:
        """The requests that arrived, decoded (a failed one is answered and left out), appended to the batch's lists."""
        arrived = self.joining.arrived()
        if not arrived:
            return []
        for request_id, _body, channel in arrived:
            self.ids.append(request_id)
            self.channels.append(channel)
        joined = _decode_each(self.api, [body for _, body, _ in arrived], [channel for _, _, channel in arrived], True, self.spec,
                              [request_id for request_id, _, _ in arrived], self.joining.left)
        for request in joined:
            inputs.append(request.decoded.x)
            contexts.append(request.decoded.hook_context)
            self.rows.members.append(request.channel)
        return joined


def _predict_batch(api: LitAPI, live: list[_Live], spec: Any) -> None:
    try:
        outputs = predicted(api, [request.decoded.x for request in live], [request.decoded.hook_context for request in live])
    except Exception as error:  # noqa: BLE001 - the whole batch failed: every request hears why
        payload = encode_error(error)
        for request in live:
            _send(request.channel, Kind.ERROR, payload)
        return
    for request, output in zip(live, outputs):
        try:
            kind, payload = Kind.RESULT, encode_single(api, spec, output, request.decoded)
        except Exception as error:  # noqa: BLE001 - this request fails, the others go on
            kind, payload = Kind.ERROR, encode_error(error)
        _send(request.channel, kind, payload)


class _Stream:
    """One request of a batched stream: its share of each step (in litkit's order, through its own
    ``encode_response``; in LitServe's, as ``encode_response``'s step list gave it), streamed
    through the spec's envelope if there is one, or gathered into the spec's whole answer for a
    request that does not stream."""

    def __init__(self, index: int, request: _Live, lane: Iterator[Any], api: LitAPI, spec: Any, litserve: bool) -> None:
        self.index = index
        self.request_id = request.request_id
        self.channel = request.channel
        self.decoded = request.decoded
        self.lane = lane
        self.spec = spec
        self.chunks = lane if litserve else chunks_of(api, lane, request.decoded.hook_context)
        self.encode = litserve_chunk if litserve else encode_chunk
        self.gathered: list[Any] | None = [] if spec is not None and not request.decoded.streams else None
        self.parts = spec.stream(self.chunks, request.decoded.spec_context) if spec is not None and self.gathered is None else self.chunks
        self.iterator = iter(self.parts)

    def step(self, lanes: Lanes) -> bool:
        """Send (or gather) this request's next chunk; False once it is finished (END, its answer,
        its own error, or gone)."""
        if self.channel.is_cancelled():
            return False  # gone: it stops collecting its share before the next step is computed
        try:
            item = next(self.iterator)
            if self.gathered is None:
                return _send(self.channel, Kind.CHUNK, self.encode(item))
            self.gathered.append(item)
            return True
        except StopIteration:
            if self.gathered is None:
                _send(self.channel, Kind.END)
                return False
            kind, payload = Kind.RESULT, encode_json(self.spec.complete(self.gathered, self.decoded.spec_context))
        except Exception as error:
            if lanes.error is not None:
                raise  # predict or unbatch failed: the whole batch ends
            kind, payload = Kind.ERROR, encode_error(error)  # its own encode_response (or envelope) failed
        _send(self.channel, kind, payload)
        return False

    def close(self) -> None:
        close_quietly(self.iterator, self.parts, self.chunks, self.lane)


def _stream_batch(api: LitAPI, live: list[_Live], spec: Any, litserve: bool, joiners: _Joiners | None) -> None:
    """A batch's streams, in litkit's order (``predict`` yields batched items, ``unbatch`` splits
    each, request *i*'s ``encode_response`` reads its share) or, ``litserve``, in LitServe's
    (``litserve_steps``: item *i* of each step's list goes to request *i*, through its spec's
    envelope when there is one; a request that does not stream gets the spec's whole answer at the
    end). The stream goes on while any of the batch's clients listens; a request leaves it when its
    share ends (``litkit.FINISHED``), its client leaves, or its own encoding fails. With
    ``joiners``, the requests that arrived join it before each step."""
    to_close: tuple[Any, ...] = ()
    lanes: Lanes | None = None
    runs: list[_Stream] = []
    started = False
    try:
        contexts = [request.decoded.hook_context for request in live]
        inputs = call_hook(api, "batch", contexts, [request.decoded.x for request in live])
        if joiners is not None:
            joiners.check(inputs)
        outputs = call_hook(api, "predict", contexts, inputs)
        to_close = (outputs,)
        if litserve:
            unbatched, steps = litserve_steps(api, outputs, contexts)
            to_close = (steps, unbatched, outputs)
            lanes = split = Lanes(api, iter(steps), len(live), contexts, split=one_per_request)
        else:
            lanes = split = Lanes(api, iter(outputs), len(live), contexts)

        def run_of(index: int, request: _Live) -> _Stream:
            return _Stream(index, request, split.lane(index), api, spec, litserve)

        runs = [run_of(index, request) for index, request in enumerate(live)]
        started = True
        while runs:
            # Between two steps: predict is suspended at a yield (or not started). Once it has
            # returned, a request that came to join stays on the socket and starts the next batch.
            if joiners is not None and not split.exhausted:
                runs.extend(run_of(split.join(), request) for request in joiners.take(inputs, contexts))
            for run in list(runs):
                if not run.step(split):
                    runs.remove(run)
                    split.leave(run.index)
                    run.close()
                    if joiners is not None:
                        joiners.joining.left(run.request_id)
    except Exception as error:  # noqa: BLE001 - predict, unbatch or a setup step failed: every request hears why
        payload = (lanes.error if lanes is not None else None) or encode_error(error)
        for channel in [run.channel for run in runs] if started else [request.channel for request in live]:
            _send(channel, Kind.ERROR, payload)
    finally:
        for run in runs:
            run.close()
        close_quietly(*to_close)  # every client has left, or the stream ended: GeneratorExit reaches predict


def _send(channel: Channel, kind: Kind, payload: bytes = b"") -> bool:
    """Write a frame; False if this request's client has left."""
    try:
        channel.send(kind, payload)
    except OSError:  # BrokenPipeError: the server closed the pipe
        return False
    return True
