"""``litkit.AsyncClient``: the ``await`` twin of ``litkit.Client``, on stdlib asyncio streams.

It runs on whatever event loop awaits it (a notebook's included) and needs nothing beyond the
standard library. HTTP/1.1, one connection per call (``Connection: close``), with chunked or
fixed-length bodies. Closing a stream closes the connection, which cancels the work server-side.
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
import ssl
from typing import Any

from ..errors import HTTPError
from .client import ChunkDecoder, error_message, parse_server_url

# Numbers in a response head: ASCII digits only (str.isdigit() accepts "²", which int() refuses).
_STATUS = re.compile(r"[0-9]{3}")
_LENGTH = re.compile(r"[0-9]{1,18}")

__all__ = ["AsyncClient", "AsyncChunkStream"]


class AsyncClient:
    """Talk to a litkit server at ``url`` with ``await``.

    Raises:
        ValueError: ``url`` is not an http:// or https:// URL.
    """

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url, self._parts, self._prefix, self._headers = parse_server_url(url, api_key)

    async def health(self, timeout: float | None = 10.0) -> dict[str, Any]:
        """GET /health: ``{"status": "ok"}`` when every worker is ready (a 503 answer is returned too)."""
        _status, body = await self._request("GET", "/health", None, timeout)
        return json.loads(body)

    async def predict(self, payload: Any, path: str = "/predict", timeout: float | None = 60.0) -> Any:
        """POST ``payload`` as JSON and return the decoded JSON answer.

        Raises:
            litkit.HTTPError: the server answered with an error status (its message included).
        """
        status, body = await self._request("POST", path, payload, timeout)
        if status >= 400:
            raise HTTPError(status, error_message(body))
        return json.loads(body)

    def stream(self, payload: Any, path: str = "/predict", sse: bool = False, timeout: float | None = 60.0) -> AsyncChunkStream:
        """An ``AsyncChunkStream`` over the chunks of POST ``payload``; the request is sent at the
        first ``async for`` step or at ``async with``. ``aclose()`` (or leaving ``async with``)
        disconnects, which stops the work on the server."""
        return AsyncChunkStream(self, payload, path, sse, timeout)

    # -- plumbing ---------------------------------------------------------------------------------

    async def _request(self, method: str, path: str, payload: Any, timeout: float | None) -> tuple[int, bytes]:
        response = await self._open(method, path, payload, {}, timeout)
        try:
            return response.status, await response.read_all()
        finally:
            await response.close()

    async def _open(self, method: str, path: str, payload: Any, headers: dict[str, str], timeout: float | None) -> _Response:
        parts = self._parts
        port = parts.port or (443 if parts.scheme == "https" else 80)
        context = ssl.create_default_context() if parts.scheme == "https" else None
        reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port, ssl=context), timeout)
        response = _Response(reader, writer, timeout)
        try:
            body = b"" if payload is None else json.dumps(payload).encode()
            all_headers = {"Host": parts.netloc, "Content-Length": str(len(body)), "Connection": "close", **self._headers, **headers}
            if payload is not None:
                all_headers["Content-Type"] = "application/json"
            head = f"{method} {self._prefix + path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in all_headers.items())
            writer.write(head.encode() + b"\r\n" + body)
            await response.read_head()
        except BaseException:
            await response.close()
            raise
        return response


class AsyncChunkStream:
    """The chunks of one streamed response: ``async for`` over it; ``async with`` closes it."""

    def __init__(self, client: AsyncClient, payload: Any, path: str, sse: bool, timeout: float | None) -> None:
        self._request = (client, payload, path, sse, timeout)
        self._response: _Response | None = None
        self._decoder: ChunkDecoder | None = None
        self._ready: collections.deque[Any] = collections.deque()
        self.closed = False

    async def _start(self) -> None:
        client, payload, path, sse, timeout = self._request
        response = await client._open("POST", path, payload, {"Accept": "text/event-stream"} if sse else {}, timeout)
        self._response = response
        if response.status >= 400:
            body = await response.read_all()
            await self.aclose()
            raise HTTPError(response.status, error_message(body))
        self._decoder = ChunkDecoder(sse, response.headers.get("x-request-id", ""))

    def __aiter__(self) -> AsyncChunkStream:
        return self

    async def __anext__(self) -> Any:
        if self._response is None and not self.closed:
            await self._start()
        while not self._ready:
            decoder, response = self._decoder, self._response
            raw = b"" if self.closed or decoder is None or response is None or decoder.done else await response.readline()
            if not raw:
                await self.aclose()
                raise StopAsyncIteration
            try:
                self._ready.extend(decoder.feed(raw.decode().rstrip("\n")))  # type: ignore[union-attr]
            except BaseException:
                await self.aclose()
                raise
        return self._ready.popleft()

    async def aclose(self) -> None:
        """Disconnect (idempotent)."""
        self.closed = True
        response, self._response = self._response, None
        if response is not None:
            await response.close()

    async def __aenter__(self) -> AsyncChunkStream:
        await self._start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _Response:
    """The reading side of one HTTP/1.1 response: head, then the body by lines or whole."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float | None) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = timeout
        self.status = 0
        self.headers: dict[str, str] = {}
        self._buffer = b""
        self._remaining: int | None = None  # bytes of a fixed-length body still to read
        self._chunked = False
        self._eof = False

    async def _read(self, coroutine: Any) -> Any:
        return await asyncio.wait_for(coroutine, self._timeout)

    async def read_head(self) -> None:
        status_line = await self._read(self._reader.readline())
        words = status_line.decode("latin-1").split()
        if len(words) < 2 or _STATUS.fullmatch(words[1]) is None:
            raise ConnectionError(f"not an HTTP response: {status_line[:80]!r}")
        self.status = int(words[1])
        while (line := await self._read(self._reader.readline())) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if not self._chunked and "content-length" in self.headers:
            length = self.headers["content-length"]
            if _LENGTH.fullmatch(length) is None:  # int() takes "²" and " 1_0 ": a server's bytes are not a Python literal
                raise ConnectionError(f"the server's Content-Length is not a number of bytes: {length[:40]!r}")
            self._remaining = int(length)

    async def _more(self) -> bytes:
        """The next piece of the body, b"" at its end."""
        if self._eof:
            return b""
        if self._chunked:
            size = int((await self._read(self._reader.readline())).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self._eof = True
                return b""
            data = await self._read(self._reader.readexactly(size + 2))
            return data[:-2]
        if self._remaining is not None:
            if self._remaining == 0:
                self._eof = True
                return b""
            data = await self._read(self._reader.read(min(self._remaining, 65536)))
            self._remaining -= len(data)
        else:
            data = await self._read(self._reader.read(65536))
        self._eof = not data
        return data

    async def readline(self) -> bytes:
        """One line of the body with its newline (the last may lack it); b"" at the end."""
        while b"\n" not in self._buffer:
            data = await self._more()
            if not data:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    async def read_all(self) -> bytes:
        parts = [self._buffer]
        while data := await self._more():
            parts.append(data)
        self._buffer = b""
        return b"".join(parts)

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
