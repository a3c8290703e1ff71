"""Stream tokens: a generator ``predict`` makes the endpoint stream, one chunk per ``yield``.

Run it as a script; it serves until Ctrl+C::

    python examples/stream_tokens.py             # http://127.0.0.1:8000/predict
    python examples/stream_tokens.py --port 0    # any free port: the first line printed says which

Send ``{"prompt": "...", "max_tokens": N}``; the server repeats the prompt's words (or a stock
sentence when the prompt is empty) for ``max_tokens`` tokens, one every 50 ms.

NDJSON, the default: one JSON object per line, each sent as soon as it is made (``-N`` stops curl
from buffering)::

    $ curl -N -X POST http://127.0.0.1:8000/predict -H 'Content-Type: application/json' \\
          -d '{"prompt": "hello streaming world", "max_tokens": 4}'
    {"token":"hello"}
    {"token":"streaming"}
    {"token":"world"}
    {"token":"hello"}

Server-sent events, when the request says ``Accept: text/event-stream``; ``data: [DONE]`` ends it::

    $ curl -N -X POST http://127.0.0.1:8000/predict -H 'Content-Type: application/json' \\
          -H 'Accept: text/event-stream' -d '{"prompt": "hello streaming world", "max_tokens": 2}'
    data: {"token":"hello"}

    data: {"token":"streaming"}

    data: [DONE]

Press Ctrl+C in curl in the middle of a long stream (``"max_tokens": 1000``): the server notices
that the client left, closes the generator at its ``yield``, and the ``finally`` block in
``predict`` prints ``stream_tokens: generation stopped after 7 of 1000 tokens`` in the terminal
that runs this script. No more tokens are computed for a client that is gone.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Iterator

import litkit

STOCK_SENTENCE = "the quick brown fox jumps over the lazy dog"


class TokenStreamAPI(litkit.LitAPI):
    """Streams ``{"token": word}`` chunks for ``{"prompt": "...", "max_tokens": N}``."""

    def __init__(self, delay: float = 0.05) -> None:
        # __init__ runs in the serving process; its attributes travel to the workers with the object.
        self.delay = delay

    def decode_request(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise litkit.HTTPError(422, 'send a JSON object such as {"prompt": "hello", "max_tokens": 5}')
        max_tokens = request.get("max_tokens", 10)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 0 <= max_tokens <= 10_000:
            raise litkit.HTTPError(422, f"max_tokens must be an int from 0 to 10000, got {max_tokens!r}")
        return {"words": str(request.get("prompt", "")).split() or STOCK_SENTENCE.split(), "max_tokens": max_tokens}

    def predict(self, x: dict[str, Any]) -> Iterator[str]:
        # A generator function: litkit streams what encode_response makes of each yielded value.
        words, max_tokens = x["words"], x["max_tokens"]
        made = 0
        try:
            for i in range(max_tokens):
                time.sleep(self.delay)  # stands in for the work of computing one token
                made += 1
                yield words[i % len(words)]
        finally:
            # Runs when the stream is complete, and also when the client leaves halfway: litkit
            # closes this generator at its yield, so this is where to release what it holds.
            print(f"stream_tokens: generation stopped after {made} of {max_tokens} tokens", flush=True)

    def encode_response(self, output: Iterator[str]) -> Iterator[dict[str, str]]:
        # For a streaming endpoint this gets the predict generator and yields the chunks to send.
        for token in output:
            yield {"token": token}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a streaming token generator (NDJSON, or SSE with Accept: text/event-stream).")
    parser.add_argument("--port", type=int, default=8000, help="TCP port, 0 for any free one (default: 8000)")
    args = parser.parse_args(argv)
    # Blocks: prints "litkit: serving TokenStreamAPI at <url>/predict ...", then serves until Ctrl+C or SIGTERM.
    litkit.run(TokenStreamAPI(), port=args.port)


if __name__ == "__main__":
    main()
