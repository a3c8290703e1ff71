"""Dynamic batching's hooks, for every backend: ``batch``, one ``predict``, ``unbatch``, and the
check that ``unbatch`` gave one item per request; and ``Lanes``, which splits a batched stream into
one iterator per request.

Under batching, ``batch``, ``predict`` and ``unbatch`` receive, as ``context``, the list of the
batch's per-request dicts (LitServe's); ``decode_request`` and ``encode_response`` their own.

Stdlib only: this module runs in worker processes and in Ray replicas.
"""

from __future__ import annotations

import collections
import inspect
from typing import Any, Iterator

from ..api import FINISHED, LitAPI
from ..errors import HTTPError
from ..wire.encoding import encode_error
from .hooks import call_hook

__all__ = ["Lanes", "litserve_steps", "one_per_request", "predicted", "takes_joiners", "unbatched"]


def predicted(api: LitAPI, inputs: list[Any], contexts: list[Any]) -> list[Any]:
    """``unbatch(predict(batch(inputs)))``: one output per input, in order.

    Raises:
        HTTPError: 500 when ``unbatch`` did not give one item per input.
        Exception: whatever a hook raises (the whole batch fails).
    """
    batched = call_hook(api, "batch", contexts, inputs)
    return unbatched(api, call_hook(api, "predict", contexts, batched), len(inputs), contexts)


def unbatched(api: LitAPI, output: Any, expected: int, contexts: list[Any]) -> list[Any]:
    """``api.unbatch(output)`` as a list, checked to hold one item per request.

    Raises:
        TypeError: ``unbatch`` returned something that is not a sequence.
        HTTPError: 500 when it holds more or fewer than ``expected`` items.
    """
    return _one_each(
        call_hook(api, "unbatch", contexts, output),
        expected,
        "unbatch must return a sequence with one item per request, got {type}",
        "batch size mismatch: expected {expected} outputs (one per request in the batch), got {got}; "
        "predict must return one output per input and unbatch must split it in order",
    )


def _one_each(values: Any, expected: int, not_a_sequence: str, mismatch: str) -> list[Any]:
    """``values`` as a list of ``expected`` items, one per request of a batch; the messages name the
    hook at fault (``{type}``: what it gave instead of a sequence; ``{expected}``, ``{got}``: counts).

    Raises:
        TypeError: ``values`` is not a sequence.
        HTTPError: 500 when it holds more or fewer than ``expected`` items.
    """
    try:
        items = list(values)
    except TypeError:
        raise TypeError(not_a_sequence.format(type=type(values).__name__)) from None
    if len(items) != expected:
        raise HTTPError(500, mismatch.format(expected=expected, got=len(items)))
    return items


def takes_joiners(api: LitAPI) -> bool:
    """Whether ``api`` declares that its batched stream takes requests while it runs (``LitAPI.joinable``).

    Raises:
        TypeError: ``joinable`` is set to something other than True or False.
    """
    joinable = getattr(api, "joinable", False)
    if not isinstance(joinable, bool):
        raise TypeError(f"{type(api).__name__}.joinable must be True or False, got {joinable!r}")
    return joinable


class Lanes:
    """Splits ``predict``'s batched stream into one iterator per request, pulled on demand: each
    batched item ``predict`` yields is unbatched, and request *i* receives its share through
    ``lane(i)`` (which its ``encode_response`` reads, as in a stream that is not batched); the
    lane ends where request *i*'s item is ``FINISHED``, or where ``predict``'s stream ends."""

    def __init__(self, api: LitAPI, outputs: Iterator[Any], count: int, contexts: list[Any], split: Any = None) -> None:
        """``split(api, step, count, contexts)``: one step of ``outputs`` as one item per request
        (default ``unbatched``, which calls ``api.unbatch``)."""
        self.api = api
        self.split = split or unbatched
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
            item = buffer.popleft()
            if item is FINISHED:
                self.leave(index)  # predict said this request's answer is complete
                return
            yield item

    def leave(self, index: int) -> None:
        """Request ``index`` is finished or gone: it stops collecting its share."""
        self.buffers[index] = None

    def join(self) -> int:
        """A request joins the stream (a joinable batch, between two steps): its index. It
        receives its share from the next step ``predict`` yields, which holds one item more."""
        self.buffers.append(collections.deque())
        return len(self.buffers) - 1

    def _advance(self) -> bool:
        if self.exhausted:
            return False
        try:
            items = self.split(self.api, next(self.outputs), len(self.buffers), self.contexts)
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


def one_per_request(api: LitAPI, step: Any, expected: int, contexts: list[Any]) -> list[Any]:
    """A step of LitServe's batched stream (``litserve_steps``): ``encode_response``'s list, one item
    per request.

    Raises:
        HTTPError: 500 when it holds more or fewer than ``expected`` items.
    """
    return _one_each(
        step,
        expected,
        "in a batched stream encode_response yields one list per step, one item per request; got {type}",
        "batch size mismatch: encode_response yielded {got} items for a batch of {expected}; "
        "in a batched stream it yields one list per step, one item per request, in order",
    )


def litserve_steps(api: LitAPI, outputs: Iterator[Any], contexts: list[Any]) -> tuple[Any, Any]:
    """A batched stream in LitServe 0.2.19's order (``litkit.contract.conventions``): ``unbatch``
    gets ``predict``'s whole iterator (LitAPI's own ``unbatch`` splits each step into a list),
    ``encode_response`` the iterator that returns, with the batch's list of contexts; it yields one
    list per step, item *i* for request *i*. Returns ``(unbatched, steps)``, both to be closed."""
    if inspect.unwrap(type(api).unbatch) is LitAPI.unbatch:
        unbatched: Any = (list(step) for step in outputs)
    else:
        unbatched = call_hook(api, "unbatch", contexts, outputs)
    return unbatched, call_hook(api, "encode_response", contexts, unbatched)
