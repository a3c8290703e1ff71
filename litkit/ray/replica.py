"""``Replica``: the Ray Serve deployment class that runs a LitAPI, one object per replica.

Ray's HTTP proxy hands each request to ``__call__`` as a Starlette ``Request``; the answer follows
litkit's own HTTP contract: JSON bodies decoded and encoded by ``litkit.wire.encoding``, NDJSON or
SSE streams chunk by chunk, the same error mapping (400 for a body ``decode_request`` cannot use,
an ``HTTPError``'s status, 500 with type and message), ``timeout`` as 504, and cancellation when
the client leaves (``litkit.ray.sources``). Ray's proxy echoes the client's ``X-Request-ID`` (or
makes one) on every answer; error bodies carry the same id.

Sync hooks run off the event loop, on a thread per request, one request at a time per replica
(as in a litkit worker; the others wait on a lock); async hooks run on the loop. ``forwarded`` is
the same answer for ``litkit.ray.router`` (several endpoints in one application). The replica is
built from bytes the caller's process made with cloudpickle (``litkit.ray.app``), so classes from
a notebook cell or a script's ``__main__`` reach it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any, AsyncIterator, Iterator

import cloudpickle
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..api import is_async_api
from ..cancellation import _set_task_current
from ..errors import HTTPError
from ..wire.encoding import decode_body, encode_chunk, encode_decode_error, encode_error, encode_json
from .sources import END, AsyncSource, Cancellation, ThreadedIterator

__all__ = ["Replica", "path_in_app"]

logger = logging.getLogger("litkit.ray")


class _HookFailed(Exception):
    """A hook raised: ``report`` is litkit's error report (status, error, traceback)."""

    def __init__(self, report: dict[str, Any]) -> None:
        super().__init__(report["error"])
        self.report = report


def _report(error: BaseException, decoding: bool = False) -> dict[str, Any]:
    """litkit's error report for ``error`` (call it inside the ``except`` block)."""
    if isinstance(error, _HookFailed):
        return error.report
    return json.loads(encode_decode_error(error) if decoding else encode_error(error))  # type: ignore[no-any-return]


class Replica:
    """One Ray Serve replica of a litkit endpoint; ``config`` is what ``litkit.ray_app`` sent."""

    def __init__(self, config: bytes) -> None:
        options = cloudpickle.loads(config)
        for entry in options["sys_path"]:  # where the caller imported the API's module from
            if entry not in sys.path:
                sys.path.append(entry)
        self.api = cloudpickle.loads(options["api"])
        self.spec = cloudpickle.loads(options["spec"]) if options["spec"] is not None else None
        self.api_path: str = options["api_path"]
        self.stream: bool = options["stream"]
        self.timeout: float | None = options["timeout"]
        self.is_async = is_async_api(self.api)
        self.model = (self.spec.model if self.spec is not None else None) or type(self.api).__name__
        self.created = int(time.time())
        self._closing: set[asyncio.Future[None]] = set()  # sources closing after a cancellation
        # Sync hooks run one request at a time per replica, as in a litkit worker; the requests Ray
        # hands over meanwhile wait here (a client that leaves while waiting never reaches a hook).
        # Held until the request's thread is done, even after a cancellation.
        self._serial = asyncio.Lock()
        import ray
        from ray import serve

        device = "cuda:0" if ray.get_gpu_ids() else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the replica's GPU
        self.api.setup(device)
        if options["max_batch_size"] > 1:
            self._batched = serve.batch(max_batch_size=options["max_batch_size"], batch_wait_timeout_s=options["batch_timeout"])(self._predict_batch)

    # -- routing ----------------------------------------------------------------------------------

    async def __call__(self, request: Request) -> Response:
        """A request from Ray's HTTP proxy (this replica's application has one endpoint)."""
        body = await request.body() if request.method == "POST" else b""
        headers = request.headers
        return await self.respond(request.method, path_in_app(request), headers.get("x-request-id", ""), headers.get("accept", ""), body)

    async def forwarded(self, method: str, path: str, request_id: str, accept: str, body: bytes) -> AsyncIterator[Any]:
        """A request ``litkit.ray.router`` forwards (a handle call with ``stream=True``): the
        status and headers first, then the body in parts. Ray cancels this generator when the
        router's client leaves, which closes the stream's source as a direct hang-up does."""
        response = await self.respond(method, path, request_id, accept, body)
        yield response.status_code, [(name.decode("latin-1"), value.decode("latin-1")) for name, value in response.raw_headers]
        if not isinstance(response, _Stream):
            yield response.body
            return
        try:
            async for part in response.body_iterator:
                yield part
        finally:
            await response.source.aclose()

    async def respond(self, method: str, path: str, request_id: str, accept: str, body: bytes) -> Response:
        if method == "GET" and path == "/health":
            return _json(200, {"status": "ok"})
        if self.spec is not None and method == "GET":
            for name, extra_path in self.spec.extra_paths.items():
                if path == extra_path:
                    return _json(200, self.spec.extra_response(name, self.model, self.created))
        if path != self.api_path:
            return self._error(404, f"no endpoint at {path}; POST to {self.api_path}", request_id)
        if method != "POST":
            return self._error(405, f"{method} is not allowed at {path}; send a POST with a JSON body", request_id, {"Allow": "POST"})
        sse = (self.spec is not None and self.spec.always_sse) or "text/event-stream" in accept
        cancellation = Cancellation()
        _set_task_current(cancellation)  # litkit.cancelled() in this task and the threads it starts
        try:
            answer = self._answer(body, request_id, sse, cancellation)
            if self.timeout is None:
                return await answer
            return await asyncio.wait_for(answer, self.timeout)
        except asyncio.TimeoutError:
            cancellation.cancelled = True
            message = f"no response within timeout={self.timeout:g}s"
            return self._error(504, message + "; pass a larger timeout to ray_app() if this is expected", request_id)
        except asyncio.CancelledError:
            cancellation.cancelled = True  # the client left: Ray cancels this task
            raise
        except HTTPError as error:
            return self._error(error.status, error.message, request_id)
        except _HookFailed as failure:
            return self._failed(failure.report, request_id)

    async def _answer(self, body: bytes, request_id: str, sse: bool, cancellation: Cancellation) -> Response:
        """The response up to its first byte: a whole JSON answer, or a stream whose first chunk is ready."""
        request = decode_body(body)  # HTTPError(400) for a bad body
        streaming = self.stream
        context = None
        if self.spec is not None:
            request, streaming = self.spec.decode_request(request)
            context = self.spec.context(request, request_id)
        if not streaming:
            if hasattr(self, "_batched"):
                return Response(await self._answer_batched(request), media_type="application/json")
            if self.is_async:
                return Response(await self._answer_async(request), media_type="application/json")
            await self._serial.acquire()
            work = asyncio.ensure_future(asyncio.to_thread(self._answer_sync, request, context, cancellation))
            work.add_done_callback(lambda _: self._serial.release())
            return Response(await asyncio.shield(work), media_type="application/json")  # shielded: the thread runs on anyway
        source: ThreadedIterator | AsyncSource
        if self.is_async:
            source = AsyncSource(lambda: self._async_chunks(request))
        else:
            await self._serial.acquire()
            source = ThreadedIterator(lambda: self._sync_chunks(request, context), on_closed=self._serial.release)
        try:
            first = await source.next_item()
        except asyncio.CancelledError:
            # The client left or the timeout passed: answer now, close the source in the background
            # (a sync step in progress ends first; GeneratorExit then reaches the user's yield).
            closing = asyncio.ensure_future(source.aclose())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            raise
        except Exception as error:  # noqa: BLE001 - a hook failed before the first chunk: an error status
            await source.aclose()
            raise _HookFailed(_report(error)) from error
        return _Stream(
            source,
            self._frames(source, first, request_id, sse),
            media_type="text/event-stream" if sse else "application/x-ndjson",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    # -- sync hooks (on a thread) -------------------------------------------------------------------

    def _decode(self, request: Any) -> Any:
        try:
            return self.api.decode_request(request)
        except Exception as error:  # noqa: BLE001 - the body is not what decode_request expects: 400
            raise _HookFailed(_report(error, decoding=True)) from error

    def _answer_sync(self, request: Any, context: Any, cancellation: Cancellation) -> bytes:
        x = self._decode(request)
        try:
            output = self.api.predict(x)
            if self.spec is None:
                return encode_json(self.api.encode_response(output))
            chunks = _chunks_of(self.api, output) if self.stream else iter([self.api.encode_response(output)])
            collected = []
            try:
                for chunk in chunks:
                    if cancellation.cancelled:  # nobody will read the answer: stop generating
                        break
                    collected.append(chunk)
            finally:
                _close(chunks, output)
            return encode_json(self.spec.complete(collected, context))
        except Exception as error:  # noqa: BLE001 - answered as litkit answers a failing hook
            raise _HookFailed(_report(error)) from error

    def _sync_chunks(self, request: Any, context: Any) -> Iterator[Any]:
        """Every chunk of a sync stream, hooks included; runs on the stream's own thread."""
        x = self._decode(request)
        output = self.api.predict(x)
        chunks = _chunks_of(self.api, output) if self.stream else iter([self.api.encode_response(output)])
        try:
            if self.spec is not None:
                yield from self.spec.stream(chunks, context)
            else:
                yield from chunks
        finally:
            _close(chunks, output)  # GeneratorExit reaches the user's generators at their yield

    # -- async hooks (on the replica's loop) ------------------------------------------------------------

    async def _answer_async(self, request: Any) -> bytes:
        try:
            x = await _result(self.api.decode_request(request))
        except Exception as error:  # noqa: BLE001 - the body is not what decode_request expects: 400
            raise _HookFailed(_report(error, decoding=True)) from error
        try:
            output = await _result(self.api.predict(x))
            return encode_json(await _result(self.api.encode_response(output)))
        except Exception as error:  # noqa: BLE001
            raise _HookFailed(_report(error)) from error

    async def _async_chunks(self, request: Any) -> AsyncIterator[Any]:
        try:
            x = await _result(self.api.decode_request(request))
        except Exception as error:  # noqa: BLE001
            raise _HookFailed(_report(error, decoding=True)) from error
        output = self.api.predict(x)
        chunks = await _result(self.api.encode_response(output))
        if isinstance(chunks, (dict, str, bytes)) or not (hasattr(chunks, "__aiter__") or hasattr(chunks, "__iter__")):
            raise TypeError(
                f"encode_response of a streaming endpoint must return an iterator or async iterator of chunks, "
                f"got {type(chunks).__name__}; write it as `async def encode_response(self, output): async for out in output: yield {{...}}`"
            )
        return _closing_async(chunks, output)

    # -- batching (Ray Serve's own) ---------------------------------------------------------------------

    async def _answer_batched(self, request: Any) -> bytes:
        x = await asyncio.to_thread(self._decode, request)
        output = await self._batched(x)
        if isinstance(output, _HookFailed):
            raise output
        try:
            return encode_json(self.api.encode_response(output))
        except Exception as error:  # noqa: BLE001
            raise _HookFailed(_report(error)) from error

    async def _predict_batch(self, inputs: list[Any]) -> list[Any]:
        """One ``predict`` call for the requests Ray Serve grouped (``serve.batch``)."""
        return await asyncio.to_thread(self._predict_batch_sync, inputs)

    def _predict_batch_sync(self, inputs: list[Any]) -> list[Any]:
        try:
            outputs = list(self.api.unbatch(self.api.predict(self.api.batch(inputs))))
            if len(outputs) != len(inputs):
                raise HTTPError(
                    500,
                    f"batch size mismatch: expected {len(inputs)} outputs (one per request in the batch), got "
                    f"{len(outputs)}; predict must return one output per input and unbatch must split it in order",
                )
            return outputs
        except Exception as error:  # noqa: BLE001 - the whole batch failed: every request hears why
            failure = _HookFailed(_report(error))
            return [failure] * len(inputs)

    # -- the response -------------------------------------------------------------------------------------

    async def _frames(self, source: ThreadedIterator | AsyncSource, first: Any, request_id: str, sse: bool) -> AsyncIterator[bytes]:
        """The stream's bytes; a client that leaves cancels this generator's task, which closes ``source``."""
        item = first
        try:
            while item is not END:
                yield _frame(encode_chunk(item), sse)
                item = await source.next_item()
            if sse:
                yield b"data: [DONE]\n\n"
        except Exception as error:  # noqa: BLE001 - mid-stream: a final error line, as litkit's server sends
            report = _report(error)
            self._log_failure(report, request_id)
            body = json.dumps(self._error_body(report["status"], report["error"], request_id)).encode()
            yield b"event: error\ndata: " + body + b"\n\n" if sse else body + b"\n"
        finally:
            await source.aclose()

    def _error_body(self, status: int, message: str, request_id: str) -> Any:
        if self.spec is not None:
            return self.spec.error_body(status, message, request_id)
        return {"error": message, "request_id": request_id}

    def _error(self, status: int, message: str, request_id: str, headers: dict[str, str] | None = None) -> Response:
        return _json(status, self._error_body(status, message, request_id), headers)

    def _failed(self, report: dict[str, Any], request_id: str) -> Response:
        self._log_failure(report, request_id)
        return self._error(report["status"], report["error"], request_id)

    @staticmethod
    def _log_failure(report: dict[str, Any], request_id: str) -> None:
        if report.get("traceback"):
            # A client's bad input (4xx from decode_request) is not the operator's alarm.
            level = logging.ERROR if report["status"] >= 500 else logging.INFO
            logger.log(level, "request %s failed in a hook:\n%s", request_id, report["traceback"].rstrip())


class _Stream(StreamingResponse):
    """A streaming response that closes its source however it ends, even when the client left
    before the body was started (Starlette then never runs the body iterator's ``finally``)."""

    def __init__(self, source: ThreadedIterator | AsyncSource, frames: AsyncIterator[bytes], **options: Any) -> None:
        super().__init__(frames, **options)
        self.source = source

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.source.aclose()


def path_in_app(request: Request) -> str:
    """The request's path under the application's route prefix (``serve run --route-prefix``, YAML)."""
    path: str = request.scope["path"]
    root: str = request.scope.get("root_path", "") or ""
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def _json(status: int, value: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(encode_json(value), status_code=status, media_type="application/json", headers=headers)


def _frame(payload: bytes, sse: bool) -> bytes:
    """One chunk on the wire, as litkit's server frames it: an NDJSON line or an SSE event."""
    if not sse:
        return payload + b"\n"
    if b"\n" not in payload:
        return b"data: " + payload + b"\n\n"
    return b"".join(b"data: " + line + b"\n" for line in payload.split(b"\n")) + b"\n"


def _chunks_of(api: Any, output: Any) -> Iterator[Any]:
    """``encode_response``'s iterator of chunks for a streaming ``predict``'s output."""
    chunks = api.encode_response(output)
    if isinstance(chunks, (dict, str, bytes)) or not hasattr(chunks, "__iter__"):
        _close(output)
        raise TypeError(
            f"encode_response of a streaming endpoint must return an iterator of chunks, got "
            f"{type(chunks).__name__}; write it as a generator: `for out in output: yield {{...}}`"
        )
    return iter(chunks)


def _close(*generators: Any) -> None:
    for generator in generators:
        close = getattr(generator, "close", None)
        if close is not None:
            close()


async def _closing_async(chunks: Any, output: Any) -> AsyncIterator[Any]:
    """Iterate ``chunks`` (sync or async); on the way out close it and ``output``."""
    try:
        if hasattr(chunks, "__aiter__"):
            async for chunk in chunks:
                yield chunk
        else:
            for chunk in chunks:
                yield chunk
    finally:
        for generator in (chunks, output):
            if hasattr(generator, "aclose"):
                await generator.aclose()
            elif hasattr(generator, "close"):
                generator.close()


async def _result(value: Any) -> Any:
    """A hook's return value, awaited when the hook is ``async def``."""
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value
