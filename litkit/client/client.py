"""A small blocking client for a litkit server (stdlib only): ``predict``, ``stream``, ``health``.

``Server.predict`` and ``Server.stream`` use it, so a notebook cell can call the server it just
started. Closing a stream closes the connection, which cancels the work server-side.
``litkit.AsyncClient`` (``async_client.py``) is its ``await`` twin and shares ``ChunkDecoder``.
"""

from __future__ import annotations

import collections
import http.client
import json
import urllib.parse
from typing import Any

from ..errors import HTTPError

__all__ = ["Client", "ChunkStream", "ChunkDecoder"]


def parse_server_url(url: str, api_key: str | None) -> tuple[str, urllib.parse.SplitResult, str, dict[str, str]]:
    """What both clients keep of a server URL and key: the URL, its parts, its path prefix, the
    headers every request carries.

    Raises:
        ValueError: ``url`` is not an http:// or https:// URL.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"url must look like 'http://127.0.0.1:8000', got {url!r}")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return url.rstrip("/"), parts, parts.path.rstrip("/"), headers


# What a streamed answer is sent as: NDJSON, or server-sent events.
_STREAM_TYPES = ("application/x-ndjson", "text/event-stream")


class Client:
    """Talk to a litkit server at ``url`` (e.g. ``"http://127.0.0.1:8000"``).

    Raises:
        ValueError: ``url`` is not an http:// or https:// URL.
    """

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url, self._parts, self._prefix, self._headers = parse_server_url(url, api_key)

    def health(self, timeout: float | None = 10.0) -> dict[str, Any]:
        """GET /health: ``{"status": "ok"}`` when every worker is ready (a 503 answer is returned too)."""
        _status, _headers, body = self._request("GET", "/health", None, {}, timeout)
        return json.loads(body)

    def predict(self, payload: Any, path: str = "/predict", timeout: float | None = 60.0) -> Any:
        """POST ``payload`` as JSON and return the decoded JSON answer.

        Raises:
            litkit.HTTPError: the server answered with an error status (its message included).
            ValueError: the endpoint streams its answer: ``stream()`` fits it.
        """
        status, headers, body = self._request("POST", path, payload, {}, timeout)
        if status >= 400:
            raise HTTPError(status, error_message(body))
        if headers.get_content_type() in _STREAM_TYPES:
            raise ValueError(f"{self.url}{path} streams its answer ({headers.get_content_type()}); call stream() instead of predict()")
        return json.loads(body)

    def stream(self, payload: Any, path: str = "/predict", sse: bool = False, timeout: float | None = 60.0) -> ChunkStream:
        """POST ``payload`` and return a ``ChunkStream`` over the chunks as they arrive.

        Iterate over it (each chunk is decoded JSON, or the text itself when a chunk is not JSON).
        Closing it, or leaving its ``with`` block, disconnects, which stops the work on the server.
        ``timeout`` bounds the wait for each piece of the response.

        Raises:
            litkit.HTTPError: the server refused the request (here), or the stream ended with an
                error (while iterating).
            ValueError: the endpoint answers with one JSON body: ``predict()`` fits it.
        """
        connection = self._connect(timeout)
        try:
            headers = {"Accept": "text/event-stream"} if sse else {}
            response = self._send(connection, "POST", path, payload, headers)
            if response.status >= 400:
                raise HTTPError(response.status, error_message(response.read()))
            if response.headers.get_content_type() not in _STREAM_TYPES:
                raise ValueError(f"{self.url}{path} answers with one JSON body, not a stream; call predict() instead of stream()")
        except BaseException:
            connection.close()
            raise
        return ChunkStream(connection, response, ChunkDecoder(sse, response.getheader("X-Request-ID", "")))

    # -- plumbing ---------------------------------------------------------------------------------

    def _connect(self, timeout: float | None) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._parts.scheme == "https" else http.client.HTTPConnection
        return cls(self._parts.hostname, self._parts.port, timeout=timeout)  # type: ignore[arg-type]

    def _send(self, connection: http.client.HTTPConnection, method: str, path: str, payload: Any, headers: dict[str, str]) -> http.client.HTTPResponse:
        body = None if payload is None else json.dumps(payload).encode()
        all_headers = {**self._headers, **headers}
        if body is not None:
            all_headers["Content-Type"] = "application/json"
        connection.request(method, self._prefix + path, body=body, headers=all_headers)
        return connection.getresponse()

    def _request(self, method: str, path: str, payload: Any, headers: dict[str, str], timeout: float | None) -> tuple[int, http.client.HTTPMessage, bytes]:
        connection = self._connect(timeout)
        try:
            response = self._send(connection, method, path, payload, headers)
            return response.status, response.headers, response.read()
        finally:
            connection.close()


class ChunkStream:
    """The chunks of one streamed response, as they arrive: an iterator and a context manager.

    ``close()`` (or leaving the ``with`` block, or dropping the last reference) closes the
    connection, which the server takes as the client leaving: it stops the work.
    """

    def __init__(self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse, decoder: ChunkDecoder) -> None:
        self._connection: http.client.HTTPConnection | None = connection
        self._response = response
        self._decoder = decoder
        self._ready: collections.deque[Any] = collections.deque()

    def __iter__(self) -> ChunkStream:
        return self

    def __next__(self) -> Any:
        while not self._ready:
            raw = b"" if self._connection is None or self._decoder.done else self._response.readline()
            if not raw:
                self.close()
                raise StopIteration
            try:
                self._ready.extend(self._decoder.feed(raw.decode().rstrip("\n")))
            except BaseException:
                self.close()
                raise
        return self._ready.popleft()

    @property
    def closed(self) -> bool:
        return self._connection is None

    def close(self) -> None:
        """Disconnect (idempotent)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def __enter__(self) -> ChunkStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class ChunkDecoder:
    """Turns the lines of a streamed body (NDJSON, or SSE) into chunks; shared by both clients."""

    def __init__(self, sse: bool, request_id: str) -> None:
        self.sse = sse
        self.request_id = request_id
        self.done = False  # SSE's "data: [DONE]" arrived
        self._event = "message"
        self._data: list[str] = []

    def feed(self, line: str) -> list[Any]:
        """The chunks that ``line`` (without its newline) completes.

        Raises:
            litkit.HTTPError: the line is the server's final error report.
        """
        if not self.sse:
            return [self._chunk(line, False)]
        line = line.rstrip("\r")
        if line.startswith("data:"):
            self._data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            self._event = line[6:].strip()
        elif not line and self._data:
            text = "\n".join(self._data)
            is_error = self._event == "error"
            self._event, self._data = "message", []
            if text == "[DONE]":
                self.done = True
                return []
            return [self._chunk(text, is_error)]
        return []

    def _chunk(self, text: str, is_error: bool) -> Any:
        value = _decode_chunk(text)
        if is_error or _is_error_line(value, self.request_id):
            raise HTTPError(500, _error_text(value) if isinstance(value, dict) and "error" in value else text)
        return value


def error_message(body: bytes) -> str:
    """The ``error`` field of a litkit error body, else the body as text."""
    try:
        return _error_text(json.loads(body))
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")


def _error_text(value: dict[str, Any]) -> str:
    """litkit's ``{"error": "..."}``, or a spec's ``{"error": {"message": "..."}}`` (OpenAI's)."""
    error = value["error"]
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])
    return str(error)


def _decode_chunk(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return line


def _is_error_line(value: Any, request_id: str) -> bool:
    """The server ends a failed NDJSON stream with ``{"error": ..., "request_id": <this request>}``."""
    return isinstance(value, dict) and value.keys() == {"error", "request_id"} and value["request_id"] == request_id
