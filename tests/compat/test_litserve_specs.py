"""LitServe's ``ls.OpenAISpec()`` and ``ls.OpenAIEmbeddingSpec()`` under ``import litkit as ls``,
called by the official ``openai`` client over real HTTP."""

from __future__ import annotations

import base64
import concurrent.futures
import struct
from typing import Any, Callable, Iterator

import cloudpickle
import openai
import pytest
import requests

import litkit as ls
import litserve_apis as apis
from runner import run  # noqa: F401 - the fixture

cloudpickle.register_pickle_by_value(apis)


@pytest.fixture
def client() -> Iterator[Callable[[Any], openai.OpenAI]]:
    """``client(server)``: the official openai client for ``server``; closed after the test."""
    made: list[openai.OpenAI] = []

    def make(server: Any) -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=10))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_openai_spec_chat_completion_reads_the_request_by_attribute(run, client):
    server = run(ls.LitServer(apis.OpenAILitAPI(spec=ls.OpenAISpec())))
    completion = client(server).chat.completions.create(model="any", messages=[{"role": "user", "content": "hello"}])
    assert completion.choices[0].message.content == "you said: hello "
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "any"


def test_openai_spec_streams_deltas(run, client):
    server = run(ls.LitServer(apis.OpenAILitAPI(spec=ls.OpenAISpec())))
    chunks = list(client(server).chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "you said: hi "
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_openai_spec_token_usage_and_request_options(run, client):
    server = run(ls.LitServer(apis.UsageAPI(spec=ls.OpenAISpec())))
    completion = client(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], max_tokens=7)
    assert completion.choices[0].message.content == "max_tokens=7 temperature=0.7"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (5, 3, 8)
    streamed = list(client(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True))
    assert streamed[-1].usage.total_tokens == 8


def test_openai_spec_tool_calls(run, client):
    server = run(ls.LitServer(apis.ToolCallAPI(spec=ls.OpenAISpec())))
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    completion = client(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "weather?"}], tools=tools)
    [call] = completion.choices[0].message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "get_weather", '{"city": "Paris"}')


def test_the_older_spec_argument_on_the_server(run, client):
    with pytest.warns(DeprecationWarning):
        lit_server = ls.LitServer(apis.OpenAILitAPI(), spec=ls.OpenAISpec())
    server = run(lit_server)
    assert client(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}]).choices[0].message.content == "you said: a "


def _floats(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_embedding_spec_with_the_official_client(run, client):
    server = run(ls.LitServer(apis.Embedder(spec=ls.OpenAIEmbeddingSpec())))
    one = client(server).embeddings.create(model="mini", input="hello")  # the client asks for base64
    assert one.model == "mini"
    assert one.data[0].embedding == [5.0, 104.0, 1.0]
    several = client(server).embeddings.create(model="mini", input=["a", "bb"], encoding_format="float")
    assert [item.embedding for item in several.data] == [[1.0, 97.0, 1.0], [2.0, 98.0, 1.0]]
    raw = requests.post(server.url + "/v1/embeddings", json={"model": "mini", "input": "hey", "encoding_format": "base64"}, timeout=10).json()
    assert _floats(raw["data"][0]["embedding"]) == [3.0, 104.0, 1.0]


def test_embedding_spec_batches_requests(run, client):
    server = run(ls.LitServer(apis.BatchedEmbedder(max_batch_size=8, batch_timeout=0.2, spec=ls.OpenAIEmbeddingSpec())))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda text: client(server).embeddings.create(model="mini", input=text), ["a", "bb", "ccc", "dddd"]))
    assert [answer.data[0].embedding for answer in answers] == [[1.0, 97.0, 1.0], [2.0, 98.0, 1.0], [3.0, 99.0, 1.0], [4.0, 100.0, 1.0]]
    assert answers[0].usage.prompt_tokens == 2
    refused = requests.post(server.url + "/v1/embeddings", json={"model": "m", "input": ["a", "b"]}, timeout=10)
    assert refused.status_code == 400
    assert "each request must carry one input" in refused.json()["error"]["message"]
