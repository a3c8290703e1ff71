"""A request's answer as frames, for every backend.

``answer`` (sync hooks) and ``answer_async`` (async hooks) run one request's hooks and yield what
to send, as ``(Kind, payload)`` pairs of ``litkit.wire.protocol``:

* ``(RESULT, json)`` for a single answer;
* ``(CHUNK, chunk)`` for each streamed chunk, the moment it is yielded, then ``(END, b"")``;
* ``(ERROR, report)`` (``litkit.wire.encoding.encode_error``'s JSON) before the first chunk or
  after some: 400 for a body ``decode_request`` cannot use, 422 for a body that does not fit the
  hook's pydantic model, an ``HTTPError``'s (or ``fastapi.HTTPException``'s) own status, else 500
  with the error's type and message.

The caller sends each frame: a worker writes it to the request's response pipe, a Ray Serve replica
to its HTTP response. When the client has left, the caller stops pulling and closes the generator:
``GeneratorExit`` then reaches the user's generators at their ``yield``, their ``finally`` blocks run,
and no further chunk is computed. A generator that ends without a final frame saw
``litkit.cancelled()`` turn True while it gathered a spec's whole answer: nobody will read it.

Stdlib only: this module runs in worker processes and in Ray replicas.
"""

from __future__ import annotations

from typing import Any, AsyncGenerator, AsyncIterator, Generator, Iterable, Iterator, NamedTuple

from ..api import LitAPI
from ..cancellation import cancelled
from ..wire.encoding import decode_body, encode_decode_error, encode_error, encode_json
from ..wire.protocol import Kind
from .conventions import chunk_encoder
from .hooks import aclose_quietly, awaited, call_hook, close_quietly, decode_input

__all__ = ["Decoded", "Frame", "answer", "answer_async", "chunks_of", "decode", "encode_single"]

Frame = tuple[Kind, bytes]
_END: Frame = (Kind.END, b"")


class Decoded(NamedTuple):
    """One request, decoded: what ``predict`` receives (for an ``async def decode_request``, still to
    be awaited), the dict the hooks that declare ``context`` share, the spec's per-request values
    (ids, timestamps; None without a spec), and whether the answer streams (the spec decides per
    request, e.g. OpenAI's ``stream``; else the endpoint)."""

    x: Any
    hook_context: dict[str, Any]
    spec_context: Any
    streams: bool


def decode(api: LitAPI, spec: Any, stream: bool, body: bytes, request_id: str, batched: bool = False) -> Decoded:
    """Parse the body, let the spec validate it, and call ``decode_request`` (through its pydantic
    model, with ``context`` if it declares one).

    Raises:
        HTTPError: 400 for a body that is not JSON or not what the spec expects (or, ``batched``,
            cannot join a batch); 422 when it does not fit the hook's pydantic model.
        Exception: whatever ``decode_request`` raises (``encode_decode_error`` makes it a 400).
    """
    request = decode_body(body)
    hook_context: dict[str, Any] = {}  # what hooks that declare `context` share (LitServe's)
    spec_context = None
    streams = stream
    if spec is not None:
        request, streams = spec.decode_request(request)
        if batched:
            spec.check_batched(request)
        spec.populate_context(hook_context, request)
        spec_context = spec.context(request, request_id)
    return Decoded(decode_input(api, spec, request, hook_context), hook_context, spec_context, streams)


def chunks_of(api: LitAPI, outputs: Any, hook_context: Any) -> Any:
    """``encode_response``'s iterator of chunks for a streaming ``predict``'s ``outputs``.

    Raises:
        TypeError: ``encode_response`` returned one value instead of chunks (``outputs`` is closed).
    """
    chunks = call_hook(api, "encode_response", hook_context, outputs)
    if isinstance(chunks, (dict, str, bytes)) or not hasattr(chunks, "__iter__"):
        close_quietly(outputs)
        raise TypeError(
            f"encode_response of a streaming endpoint must return an iterator of chunks, got "
            f"{type(chunks).__name__}; write it as a generator: `for out in output: yield {{...}}`"
        )
    return chunks


def encode_single(api: LitAPI, spec: Any, output: Any, decoded: Decoded) -> bytes:
    """The JSON answer for one request's share of a batch: ``encode_response``, in the spec's envelope."""
    answer = call_hook(api, "encode_response", decoded.hook_context, output)
    if spec is not None:
        answer = spec.complete([answer], decoded.spec_context)
    return encode_json(answer)


def answer(api: LitAPI, spec: Any, stream: bool, body: bytes, request_id: str) -> Generator[Frame, None, None]:
    """The frames of one request through sync hooks (see the module's docstring).

    ``stream``: whether ``predict`` is a generator (the endpoint streams); ``spec``: the endpoint's
    spec or None.
    """
    try:
        decoded = decode(api, spec, stream, body, request_id)
    except Exception as error:  # noqa: BLE001 - decode_request failing means the body is not what it expects
        yield Kind.ERROR, encode_decode_error(error)
        return
    hook_context = decoded.hook_context
    failure: bytes | None = None
    try:
        outputs = call_hook(api, "predict", hook_context, decoded.x)
        if spec is None and not stream:
            result = encode_json(call_hook(api, "encode_response", hook_context, outputs))
        else:
            chunks = chunks_of(api, outputs, hook_context) if stream else iter([call_hook(api, "encode_response", hook_context, outputs)])
    except Exception as error:  # noqa: BLE001 - a failing hook answers 500 (or its HTTPError)
        failure = encode_error(error)
    if failure is not None:
        yield Kind.ERROR, failure
    elif spec is None and not stream:
        yield Kind.RESULT, result
    elif not decoded.streams:
        yield from _gathered(spec, decoded.spec_context, chunks, outputs)
    elif spec is not None:
        yield from _streamed(chunk_encoder(api), spec.stream(chunks, decoded.spec_context), chunks, outputs)
    else:
        yield from _streamed(chunk_encoder(api), chunks, outputs)


def _streamed(encode: Any, parts: Iterable[Any], *sources: Any) -> Iterator[Frame]:
    """A CHUNK per part, then END (or ERROR); on the way out, however it ends, close ``parts`` and
    the generators it reads."""
    iterator = iter(parts)
    failure: bytes | None = None
    try:
        for part in iterator:
            yield Kind.CHUNK, encode(part)
    except Exception as error:  # noqa: BLE001 - mid-stream: a final error frame
        failure = encode_error(error)
    finally:
        # Close the loop, not just the write: GeneratorExit reaches user code at its yield.
        close_quietly(iterator, parts, *sources)
    yield (Kind.ERROR, failure) if failure is not None else _END


def _gathered(spec: Any, spec_context: Any, chunks: Iterable[Any], outputs: Any) -> Iterator[Frame]:
    """A spec's whole answer built from every chunk (a request that does not stream); nothing if
    the client left meanwhile."""
    collected = []
    try:
        for chunk in chunks:
            if cancelled():  # nobody will read the answer: stop generating
                return
            collected.append(chunk)
        frame: Frame = (Kind.RESULT, encode_json(spec.complete(collected, spec_context)))
    except Exception as error:  # noqa: BLE001
        frame = (Kind.ERROR, encode_error(error))
    finally:
        close_quietly(chunks, outputs)
    yield frame


async def answer_async(api: LitAPI, stream: bool, body: bytes, request_id: str, spec: Any = None) -> AsyncGenerator[Frame, None]:
    """The frames of one request through async hooks (``async def`` or async generators; any hook
    may also be a plain function), in ``spec``'s envelope when there is one (its ``astream``, or
    its whole answer for a request that does not stream).

    A cancellation of the caller's task reaches the hook at its current ``await``
    (``CancelledError``); the user's generators are then closed on the way out.
    """
    failure: bytes | None = None
    try:
        decoded = decode(api, spec, stream, body, request_id)
        x = await awaited(decoded.x)
    except Exception as error:  # noqa: BLE001 - decode_request failing means the body is not what it expects
        failure = encode_decode_error(error)
    if failure is not None:
        yield Kind.ERROR, failure
        return
    hook_context = decoded.hook_context
    outputs: Any = None
    try:
        if not stream:
            output = await awaited(call_hook(api, "predict", hook_context, x))
            encoded = await awaited(call_hook(api, "encode_response", hook_context, output))
            if spec is None:
                result = encode_json(encoded)
            chunks: Any = [encoded]
        else:
            outputs = call_hook(api, "predict", hook_context, x)
            chunks = await awaited(call_hook(api, "encode_response", hook_context, outputs))
            if isinstance(chunks, (dict, str, bytes)) or not (hasattr(chunks, "__aiter__") or hasattr(chunks, "__iter__")):
                await aclose_quietly(outputs)
                raise TypeError(
                    f"encode_response of a streaming endpoint must return an iterator or async iterator of chunks, "
                    f"got {type(chunks).__name__}; write it as `async def encode_response(self, output): async for out in output: yield {{...}}`"
                )
    except Exception as error:  # noqa: BLE001 - a failing hook answers 500 (or its HTTPError)
        failure = encode_error(error)
    if failure is not None:
        yield Kind.ERROR, failure
        return
    if spec is None and not stream:
        yield Kind.RESULT, result
        return
    encode = chunk_encoder(api)
    parts: Any = None
    try:
        if spec is not None and not decoded.streams:
            collected = [chunk async for chunk in _each(chunks)]
            yield Kind.RESULT, encode_json(spec.complete(collected, decoded.spec_context))
            return
        parts = spec.astream(_each(chunks), decoded.spec_context) if spec is not None else _each(chunks)
        async for part in parts:
            yield Kind.CHUNK, encode(part)
    except Exception as error:  # noqa: BLE001 - mid-stream: a final error frame
        failure = encode_error(error)
    finally:
        await aclose_quietly(*(item for item in (parts, chunks, outputs) if item is not None))
    yield (Kind.ERROR, failure) if failure is not None else _END


async def _each(chunks: Any) -> AsyncIterator[Any]:
    """The chunks of an async iterator or a plain iterable, as an async iterator."""
    if hasattr(chunks, "__aiter__"):
        async for chunk in chunks:
            yield chunk
    else:
        for chunk in chunks:
            yield chunk
