"""``Replica``: the Ray Serve deployment class that runs a LitAPI, one object per replica.

Ray's HTTP proxy hands each request to ``__call__`` as a Starlette ``Request``; the answer follows
litkit's own HTTP contract because it is made by the same code as in a litkit worker: the hooks run
through ``litkit.contract`` (context, pydantic models, specs, batching, generators and their closing,
the error mapping: 400 for a body ``decode_request`` cannot use, 422 for a pydantic mismatch, an
``HTTPError``'s status, 500 with type and message), chunks and error bodies are framed by
``litkit.contract.framing``; ``timeout`` answers 504, and the work is cancelled when the client
leaves (``litkit.ray.sources``). ``self.log(key, value)`` goes to the ``litkit.ray`` logger (the
replica's log). Ray's proxy echoes the client's ``X-Request-ID`` (or
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
from typing import Any, AsyncIterator

import cloudpickle
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..api import is_async_api, set_log_sink
from ..cancellation import _BatchRows, _set_task_current
from ..contract.answer import answer, answer_async, decode, encode_single
from ..contract.batching import predicted
from ..contract.conventions import follows_litserve
from ..contract.framing import NDJSON, SSE, SSE_DONE, error_body, frame_chunk, shown_message, split_line_message, splits_line, stream_error
from ..contract.hooks import awaited, set_device
from ..wire.encoding import encode_decode_error, encode_error, encode_json
from ..wire.protocol import Kind
from .sources import END, AsyncSource, Cancellation, ThreadedIterator

__all__ = ["Replica", "path_in_app"]

logger = logging.getLogger("litkit.ray")


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
        self.litserve = follows_litserve(self.api)  # LitServer's conventions (litkit.contract.conventions)
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
        set_log_sink(_log_entry)  # self.log(key, value), from setup on: the replica's log
        set_device(self.api, device)
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
            return await self._health()
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
            work = self._answer(body, request_id, sse, cancellation)
            if self.timeout is None:
                return await work
            return await asyncio.wait_for(work, self.timeout)
        except asyncio.TimeoutError:
            cancellation.cancelled = True
            message = f"no response within timeout={self.timeout:g}s"
            return self._error(504, message + "; pass a larger timeout to ray_app() if this is expected", request_id)
        except asyncio.CancelledError:
            cancellation.cancelled = True  # the client left: Ray cancels this task
            raise

    async def _health(self) -> Response:
        """``{"status": "ok"}``, or 503 with the reason when the API's own ``health()`` hook (sync or
        async; LitServe's) returns something false or raises, as litkit's server answers."""
        hook = getattr(self.api, "health", None)
        if callable(hook):
            name = type(self.api).__name__
            try:
                result = await awaited(hook())
            except Exception as error:  # a failing check is an unhealthy API, not a failed replica
                logger.exception("%s.health() raised", name)
                return _json(503, {"status": "unavailable", "reason": f"{name}.health() raised {type(error).__name__}: {error}"})
            if not result:
                return _json(503, {"status": "unavailable", "reason": f"{name}.health() returned {result!r}"})
        return _json(200, {"status": "ok"})

    async def _answer(self, body: bytes, request_id: str, sse: bool, cancellation: Cancellation) -> Response:
        """The response up to its first byte: a whole JSON answer, an error, or a stream whose first
        chunk is ready. The hooks run through ``litkit.contract.answer``, as in a litkit worker:
        sync ones on a thread of the request's own, one request at a time per replica."""
        if hasattr(self, "_batched"):
            return await self._answer_batched(body, request_id, cancellation)
        source: ThreadedIterator | AsyncSource
        if self.is_async:
            source = AsyncSource(lambda: answer_async(self.api, self.stream, body, request_id, self.spec))
        else:
            await self._serial.acquire()
            source = ThreadedIterator(lambda: answer(self.api, self.spec, self.stream, body, request_id), on_closed=self._serial.release)
        try:
            first = await source.next_item()
        except asyncio.CancelledError:
            # The client left or the timeout passed: answer now, close the source in the background
            # (a sync step in progress ends first; GeneratorExit then reaches the user's yield).
            closing = asyncio.ensure_future(source.aclose())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
            raise
        if first is not END and first[0] == Kind.CHUNK and not self.litserve and splits_line(first[1], sse):
            await source.aclose()  # as litkit's server answers: a status, since no chunk went out yet
            return self._error(500, split_line_message(1), request_id)
        if first is END or first[0] != Kind.CHUNK:
            await source.aclose()
            if first is END:  # the answer ended without a frame: litkit.cancelled() turned True
                return self._error(503, "the request was cancelled before it was answered", request_id)
            kind, payload = first
            if kind == Kind.ERROR:
                return self._failed(json.loads(payload), request_id)
            if kind == Kind.END:  # a stream of no chunks
                return self._stream_response(EMPTY_SOURCE, self._frames(EMPTY_SOURCE, None, request_id, sse), sse)
            return Response(payload, media_type="application/json")
        return self._stream_response(source, self._frames(source, first, request_id, sse), sse)

    # -- batching (Ray Serve's own) ---------------------------------------------------------------------

    async def _answer_batched(self, body: bytes, request_id: str, cancellation: Cancellation) -> Response:
        try:
            decoded = await asyncio.to_thread(decode, self.api, self.spec, self.stream, body, request_id, True)
        except Exception as error:  # noqa: BLE001 - the body is not what decode_request expects: 400
            return self._failed(json.loads(encode_decode_error(error)), request_id)
        output = await self._batched((decoded.x, decoded.hook_context, cancellation))
        if isinstance(output, _BatchFailed):
            return self._failed(output.report, request_id)
        try:
            return Response(encode_single(self.api, self.spec, output, decoded), media_type="application/json")
        except Exception as error:  # noqa: BLE001
            return self._failed(json.loads(encode_error(error)), request_id)

    async def _predict_batch(self, requests: list[tuple[Any, Any, Cancellation]]) -> list[Any]:
        """One ``predict`` call for the requests Ray Serve grouped (``serve.batch``)."""
        return await asyncio.to_thread(self._predict_batch_sync, requests)

    def _predict_batch_sync(self, requests: list[tuple[Any, Any, Cancellation]]) -> list[Any]:
        # In to_thread's copy of the context: litkit.cancelled(i) answers for request i of this batch,
        # and litkit.cancelled() once every client of it has left (as in a litkit worker's batch).
        _set_task_current(_BatchRows([cancellation for _, _, cancellation in requests]))
        try:
            return predicted(self.api, [x for x, _, _ in requests], [context for _, context, _ in requests])
        except Exception as error:  # noqa: BLE001 - the whole batch failed: every request hears why
            return [_BatchFailed(json.loads(encode_error(error)))] * len(requests)

    # -- the response -------------------------------------------------------------------------------------

    def _stream_response(self, source: ThreadedIterator | AsyncSource | _Empty, frames: AsyncIterator[bytes], sse: bool) -> _Stream:
        return _Stream(source, frames, media_type=SSE if sse else NDJSON, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def _frames(self, source: ThreadedIterator | AsyncSource | _Empty, first: Any, request_id: str, sse: bool) -> AsyncIterator[bytes]:
        """The stream's bytes, framed as litkit's server frames them (``litkit.contract.framing``);
        a client that leaves cancels this generator's task, which closes ``source``."""
        item = first
        chunks = 0
        try:
            while item is not None and item is not END:
                kind, payload = item
                if kind == Kind.END:
                    if sse:
                        yield SSE_DONE
                    return
                if kind == Kind.ERROR:
                    report = json.loads(payload)
                    self._log_failure(report, request_id)
                    yield self._stream_error(report["status"], shown_message(report, self.litserve), request_id, report.get("detail"), sse)
                    return
                chunks += 1
                if not self.litserve and splits_line(payload, sse):
                    yield self._stream_error(500, split_line_message(chunks), request_id, None, sse)
                    return
                yield frame_chunk(payload, sse, self.litserve)
                item = await source.next_item()
        finally:
            await source.aclose()

    def _stream_error(self, status: int, message: str, request_id: str, detail: Any, sse: bool) -> bytes:
        return stream_error(json.dumps(error_body(self.spec, status, message, request_id, detail, self.litserve)).encode(), sse)

    def _error(self, status: int, message: str, request_id: str, headers: dict[str, str] | None = None, detail: Any = None) -> Response:
        return _json(status, error_body(self.spec, status, message, request_id, detail, self.litserve), headers)

    def _failed(self, report: dict[str, Any], request_id: str) -> Response:
        self._log_failure(report, request_id)
        return self._error(report["status"], shown_message(report, self.litserve), request_id, detail=report.get("detail"))

    @staticmethod
    def _log_failure(report: dict[str, Any], request_id: str) -> None:
        if report.get("traceback"):
            # A client's bad input (4xx from decode_request) is not the operator's alarm.
            level = logging.ERROR if report["status"] >= 500 else logging.INFO
            logger.log(level, "request %s failed in a hook:\n%s", request_id, report["traceback"].rstrip())


class _BatchFailed:
    """What a request of a failed batch receives from ``serve.batch`` instead of its output: litkit's
    error report (status, error, traceback)."""

    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report


class _Empty:
    """The source of a stream that ended before its first chunk."""

    async def next_item(self) -> Any:
        return END

    async def aclose(self) -> None:
        pass


EMPTY_SOURCE = _Empty()


class _Stream(StreamingResponse):
    """A streaming response that closes its source however it ends, even when the client left
    before the body was started (Starlette then never runs the body iterator's ``finally``)."""

    def __init__(self, source: ThreadedIterator | AsyncSource | _Empty, frames: AsyncIterator[bytes], **options: Any) -> None:
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


def _log_entry(key: str, value: Any) -> None:
    """``LitAPI.log`` in a replica: one line on the ``litkit.ray`` logger, which Ray writes to the
    replica's log (a litkit server hands it to ``serve(on_log=...)`` instead)."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"self.log({key!r}, value): the value must be JSON-encodable (a number, str, bool, None, list or dict); {error}") from None
    logger.info("self.log %s = %s", key, text)


def _json(status: int, value: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(encode_json(value), status_code=status, media_type="application/json", headers=headers)
