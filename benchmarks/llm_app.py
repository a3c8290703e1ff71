"""The language model both servers run in benchmarks/llm.py: one class, written as LitServe code
with one import changed (``benchmarks/llm.py`` writes the LitServe copy with the line changed back).

    BENCH_CHECKPOINT=<converted SmolLM2 folder> BENCH_EVENTS=<file> python benchmarks/llm_app.py --port 8000

``predict`` is greedy decoding with a KV cache, one token per ``yield`` (examples/chat.py's loop
without its options). It appends one JSON line per event to ``BENCH_EVENTS``: ``start`` and each
``token`` of a request (tagged by the request's ``user`` field), with the worker's CPU seconds
(``time.process_time()``, its torch threads included), and ``finally``. The harness reads them to
count what the server made for clients that had left. ``decode`` is the bare loop the harness also
runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Iterator

import litkit as ls  # was: import litserve as ls


def load(checkpoint: str, device: str = "cpu") -> tuple[Any, Any]:
    """(tokenizer, model) from a converted checkpoint (examples/chat.py's converted_checkpoint)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(checkpoint), AutoModelForCausalLM.from_pretrained(checkpoint).to(device).eval()


def decode(tokenizer: Any, model: Any, messages: list[dict[str, str]], max_tokens: int) -> Iterator[str]:
    """Greedy decoding with a KV cache: the text of each token as it is made, up to ``max_tokens``
    or the end-of-turn token."""
    import torch
    from transformers import DynamicCache

    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")["input_ids"].to(model.device)
    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        logits = model(input_ids=prompt, cache=cache, use_cache=True).logits[0, -1]
    for made in range(1, max_tokens + 1):
        token = int(logits.argmax())
        if token == tokenizer.eos_token_id:
            return
        yield tokenizer.decode([token])
        if made < max_tokens:
            with torch.inference_mode():
                logits = model(input_ids=torch.tensor([[token]], device=model.device), cache=cache, use_cache=True).logits[0, -1]


class SmolBench(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.tokenizer, self.model = load(os.environ["BENCH_CHECKPOINT"], device)
        self.events = os.environ.get("BENCH_EVENTS")

    def decode_request(self, request: Any) -> dict[str, Any]:
        messages = [{"role": message.role, "content": message.content} for message in request.messages]
        return {"messages": messages, "max_tokens": request.max_tokens or 200, "user": request.user or ""}

    def predict(self, x: dict[str, Any]) -> Iterator[str]:
        made = 0
        self._record("start", x["user"], made)
        try:
            for text in decode(self.tokenizer, self.model, x["messages"], x["max_tokens"]):
                made += 1
                self._record("token", x["user"], made)
                yield text
        finally:
            self._record("finally", x["user"], made)

    def _record(self, event: str, user: str, made: int) -> None:
        if self.events:
            line = {"event": event, "user": user, "made": made, "t": time.monotonic(), "cpu": time.process_time(), "pid": os.getpid()}
            with open(self.events, "a") as out:
                out.write(json.dumps(line) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve SmolLM2 for benchmarks/llm.py.")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    api = SmolBench(stream=True, spec=ls.OpenAISpec())
    ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=False).run(port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
