"""A small blocking client for a litkit server (stdlib only): ``predict``, ``stream``, ``health``.

``Server.predict`` and ``Server.stream`` use it, so a notebook cell can call the server it just
started. Closing a stream's iterator closes the connection, which cancels the work server-side.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Any, Iterator

from .errors import HTTPError

__all__ = ["Client"]


class Client:
    """Talk to a litkit server at ``url`` (e.g. ``"http://127.0.0.1:8000"``).

    Raises:
        ValueError: ``url`` is not an http:// or https:// URL.
    """

    def __init__(self, url: str, api_key: str | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must look like 'http://127.0.0.1:8000', got {url!r}")
        self.url = url.rstrip("/")
        self._parts = parts
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def health(self, timeout: float | None = 10.0) -> dict[str, Any]:
        """GET /health: ``{"status": "ok"}`` when every worker is ready (a 503 answer is returned too)."""
        _status, _headers, body = self._request("GET", "/health", None, {}, timeout)
        return json.loads(body)

    def predict(self, payload: Any, path: str = "/predict", timeout: float | None = 60.0) -> Any:
        """POST ``payload`` as JSON and return the decoded JSON answer.

        Raises:
            litkit.HTTPError: the server answered with an error status (its message included).
        """
        status, _headers, body = self._request("POST", path, payload, {}, timeout)
        if status >= 400:
            raise HTTPError(status, _error_message(body))
        return json.loads(body)

    def stream(self, payload: Any, path: str = "/predict", sse: bool = False, timeout: float | None = 60.0) -> Iterator[Any]:
        """POST ``payload`` and yield each chunk as it arrives: decoded JSON, or the text itself when
        a chunk is not JSON. Closing the iterator disconnects, which stops the work on the server.

        Raises:
            litkit.HTTPError: the server refused the request, or the stream ended with an error.
        """
        connection = self._connect(timeout)
        try:
            headers = {"Accept": "text/event-stream"} if sse else {}
            response = self._send(connection, "POST", path, payload, headers)
            if response.status >= 400:
                raise HTTPError(response.status, _error_message(response.read()))
            request_id = response.getheader("X-Request-ID", "")
            lines = _sse_data(response) if sse else _ndjson_lines(response)
            for line, is_error in lines:
                value = _decode_chunk(line)
                if is_error or _is_error_line(value, request_id):
                    raise HTTPError(500, value.get("error", line) if isinstance(value, dict) else line)
                yield value
        finally:
            connection.close()

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


def _error_message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode(errors="replace")


def _decode_chunk(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return line


def _is_error_line(value: Any, request_id: str) -> bool:
    """The server ends a failed NDJSON stream with ``{"error": ..., "request_id": <this request>}``."""
    return isinstance(value, dict) and value.keys() == {"error", "request_id"} and value["request_id"] == request_id


def _ndjson_lines(response: http.client.HTTPResponse) -> Iterator[tuple[str, bool]]:
    for raw in response:
        yield raw.decode().rstrip("\n"), False


def _sse_data(response: http.client.HTTPResponse) -> Iterator[tuple[str, bool]]:
    event, data = "message", []
    for raw in response:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif not line and data:
            text = "\n".join(data)
            if text == "[DONE]":
                return
            yield text, event == "error"
            event, data = "message", []
