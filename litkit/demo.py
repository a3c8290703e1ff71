"""The built-in demo API served by ``litkit demo``: a token generator that streams words."""

from __future__ import annotations

import time
from typing import Any, Iterator

from .api import LitAPI
from .errors import HTTPError

__all__ = ["TokenStreamer"]

_WORDS = "the quick brown fox jumps over the lazy dog and streams one token at a time".split()


class TokenStreamer(LitAPI):
    """Streams ``{"token": word}`` chunks: ``{"prompt": "hi", "max_tokens": 20, "delay": 0.05}``."""

    # The body the page at / starts from, and the banner's curl line sends.
    request_example = {"prompt": "hello from litkit", "max_tokens": 8, "delay": 0.2}

    def decode_request(self, request: Any) -> dict[str, Any]:
        if not isinstance(request, dict):
            raise HTTPError(422, 'send a JSON object such as {"prompt": "hi", "max_tokens": 20}')
        try:
            return {
                "prompt": str(request.get("prompt", "")),
                "max_tokens": max(0, min(int(request.get("max_tokens", 20)), 10_000)),
                "delay": max(0.0, min(float(request.get("delay", 0.05)), 5.0)),
            }
        except (TypeError, ValueError) as error:
            raise HTTPError(422, f"max_tokens must be an int and delay a number of seconds ({error})") from None

    def predict(self, x: dict[str, Any]) -> Iterator[str]:
        words = x["prompt"].split() or _WORDS
        for i in range(x["max_tokens"]):
            time.sleep(x["delay"])
            yield words[i % len(words)]

    def encode_response(self, output: Iterator[str]) -> Iterator[dict[str, Any]]:
        for index, token in enumerate(output):
            yield {"index": index, "token": token}
