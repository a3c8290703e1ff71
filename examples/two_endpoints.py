"""Two endpoints on one server: ``/embed`` answers JSON, ``/chat`` streams, each with its own workers.

Run it as a script; it serves until Ctrl+C::

    python examples/two_endpoints.py             # http://127.0.0.1:8000/embed and /chat
    python examples/two_endpoints.py --port 0    # any free port: the first lines printed say which

Call them from another terminal::

    $ curl -X POST http://127.0.0.1:8000/embed -H 'Content-Type: application/json' -d '{"text": "red fox"}'
    {"embedding":[...8 numbers...],"dimensions":8}

    $ curl -N -X POST http://127.0.0.1:8000/chat -H 'Content-Type: application/json' -d '{"prompt": "hi there"}'
    {"token":"hi"}
    {"token":"there"}

Each endpoint has its own worker processes, queue, limits and counts: ``/embed`` runs two workers
and refuses bodies over 4 KiB; ``/chat`` runs one with a 10 s timeout to its first token. A long
chat stream never holds up an embedding. ``server.status()["endpoints"]``, ``GET /info`` and
``GET /metrics`` show each endpoint on its own.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from typing import Any, Iterator

import litkit

DIMENSIONS = 8


class Embedder(litkit.LitAPI):
    """A bag-of-words "embedding": each word hashed into one of 8 dimensions, then normalised."""

    def decode_request(self, request: Any) -> str:
        if not isinstance(request, dict) or not isinstance(request.get("text"), str):
            raise litkit.HTTPError(422, 'send {"text": "..."}')
        return request["text"]

    def predict(self, text: str) -> list[float]:
        vector = [0.0] * DIMENSIONS
        for word in text.lower().split():
            vector[hashlib.sha256(word.encode()).digest()[0] % DIMENSIONS] += 1.0
        norm = math.sqrt(sum(v * v for v in vector)) or 1.0
        return [round(v / norm, 6) for v in vector]

    def encode_response(self, output: list[float]) -> dict[str, Any]:
        return {"embedding": output, "dimensions": len(output)}


class Chat(litkit.LitAPI):
    """Streams the prompt's words back, one token every ``delay`` seconds."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay

    def predict(self, request: dict[str, Any]) -> Iterator[str]:
        for word in str(request.get("prompt", "")).split():
            time.sleep(self.delay)
            yield word

    def encode_response(self, output: Iterator[str]) -> Iterator[dict[str, str]]:
        for token in output:
            yield {"token": token}


ENDPOINTS = {
    "/embed": litkit.Endpoint(Embedder(), workers=2, max_body_size=4096),
    "/chat": litkit.Endpoint(Chat(), workers=1, timeout=10),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an embedding endpoint and a streaming chat endpoint on one port.")
    parser.add_argument("--port", type=int, default=8000, help="TCP port, 0 for any free one (default: 8000)")
    args = parser.parse_args(argv)
    # Blocks: prints one "litkit: serving ... at <url>/<path>" line per endpoint, then serves until Ctrl+C.
    litkit.run(ENDPOINTS, port=args.port)


if __name__ == "__main__":
    main()
