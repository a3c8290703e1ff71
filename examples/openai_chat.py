"""An OpenAI-compatible chat endpoint backed by a small token generator.

Run it as a script; it serves until Ctrl+C::

    python examples/openai_chat.py             # http://127.0.0.1:8000/v1/chat/completions
    python examples/openai_chat.py --port 0    # any free port: the first line printed says which

Any OpenAI client works against it unchanged, e.g. the official Python package::

    import openai

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    for chunk in client.chat.completions.create(
        model="tiny-chat", messages=[{"role": "user", "content": "hello there"}], stream=True
    ):
        print(chunk.choices[0].delta.content or "", end="", flush=True)

or curl (``"stream": true`` answers with server-sent events ending in ``data: [DONE]``)::

    $ curl -N http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
          -d '{"model": "tiny-chat", "messages": [{"role": "user", "content": "hello"}], "stream": true}'
    $ curl http://127.0.0.1:8000/v1/models

The "model" is a toy: it answers with a fixed opening, then the words of your last message, one
token every 30 ms, up to ``max_tokens`` (then the finish reason is ``"length"``). What matters is
the shape: ``predict`` yields text deltas; ``litkit.specs.OpenAIChat()`` wraps each one in a
``chat.completion.chunk`` (or joins them into one ``chat.completion`` when the request does not
stream). Close the stream early (Ctrl+C in curl, ``stream.close()`` in Python) and the
generator stops: its ``finally`` prints ``openai_chat: generation stopped after N tokens``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Iterator

import litkit


class TinyChat(litkit.LitAPI):
    """A token generator that speaks OpenAI chat completions (through the spec)."""

    def __init__(self, delay: float = 0.03) -> None:
        self.delay = delay

    def decode_request(self, request: dict[str, Any]) -> dict[str, Any]:
        # The spec has checked the OpenAI shape already; take what this model uses.
        last = request["messages"][-1].get("content") or ""
        text = last if isinstance(last, str) else " ".join(part.get("text", "") for part in last if isinstance(part, dict))
        max_tokens = request.get("max_tokens") or request.get("max_completion_tokens") or 256
        return {"words": ["You", "said:", *text.split()], "max_tokens": max_tokens}

    def predict(self, x: dict[str, Any]) -> Iterator[Any]:
        made = 0
        try:
            for word in x["words"]:
                if made == x["max_tokens"]:
                    yield {"content": "", "finish_reason": "length"}
                    return
                time.sleep(self.delay)  # stands in for a forward pass
                made += 1
                yield word if made == 1 else " " + word
        finally:
            print(f"openai_chat: generation stopped after {made} tokens", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a toy chat model behind an OpenAI-compatible API.")
    parser.add_argument("--port", type=int, default=8000, help="TCP port, 0 for any free one (default: 8000)")
    args = parser.parse_args(argv)
    # Blocks: prints "litkit: serving TinyChat at <url>/v1/chat/completions ...", then serves until Ctrl+C.
    litkit.run(TinyChat(), port=args.port, spec=litkit.specs.OpenAIChat(model="tiny-chat"))


if __name__ == "__main__":
    main()
