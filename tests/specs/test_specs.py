"""The OpenAI-compatible chat spec, driven by the official ``openai`` client against a live server."""

from __future__ import annotations

import json

import apis
import openai
import pytest
import requests
from conftest import wait_until

import litkit


def openai_client(server, prefix: str = "") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}{prefix}/v1", api_key="unused", max_retries=0, timeout=10)


def test_openai_client_chat_completion_without_streaming(serve):
    server = serve(apis.ChatWords(), spec=litkit.specs.OpenAIChat(model="words-1"))
    assert server.api_path == "/v1/chat/completions"
    completion = openai_client(server).chat.completions.create(model="words-1", messages=[{"role": "user", "content": "hello there world"}])
    assert completion.object == "chat.completion"
    assert completion.model == "words-1"
    assert completion.id.startswith("chatcmpl-")
    [choice] = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == "hello there world"
    assert choice.finish_reason == "stop"

    limited = openai_client(server).chat.completions.create(model="words-1", messages=[{"role": "user", "content": "a b"}], max_tokens=3)
    assert limited.choices[0].message.content == "a b a"
    assert limited.choices[0].finish_reason == "length"


def test_openai_client_streams_deltas_then_done(serve):
    server = serve(apis.ChatWords(), spec=litkit.specs.OpenAIChat())
    stream = openai_client(server).chat.completions.create(model="any-name", messages=[{"role": "user", "content": "one two three"}], stream=True)
    chunks = list(stream)
    assert [c.choices[0].delta.content for c in chunks] == ["one", " two", " three", None]  # the last chunk only says why it ended
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, None, "stop"]
    assert {c.model for c in chunks} == {"any-name"}  # the name the request gave
    assert len({c.id for c in chunks}) == 1

    # On the wire: SSE whatever the Accept header says, one event per delta, then [DONE].
    body = {"model": "m", "messages": [{"role": "user", "content": "x y"}], "stream": True}
    response = requests.post(server.url + "/v1/chat/completions", json=body, timeout=10)
    assert response.headers["Content-Type"] == "text/event-stream"
    events = response.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert [json.loads(e.removeprefix("data: "))["object"] for e in events[:-2]] == ["chat.completion.chunk"] * 3


def test_token_counts_reach_the_answer_and_a_stream_that_asked_for_them(serve):
    server = serve(apis.ChatCounted(), spec=litkit.specs.OpenAIChat())
    client = openai_client(server)
    messages = [{"role": "user", "content": "one two three"}]
    completion = client.chat.completions.create(model="m", messages=messages)
    assert completion.choices[0].message.content == "one two three"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (3, 3, 6)

    # As OpenAI: only a stream that asks gets the usage, in a last chunk without choices.
    chunks = list(client.chat.completions.create(model="m", messages=messages, stream=True, stream_options={"include_usage": True}))
    assert [len(c.choices) for c in chunks] == [1, 1, 1, 1, 0]
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens, chunks[-1].usage.total_tokens) == (3, 3, 6)
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(client.chat.completions.create(model="m", messages=messages, stream=True))
    assert [len(c.choices) for c in plain] == [1, 1, 1, 1] and all(c.usage is None for c in plain)

    with pytest.raises(openai.BadRequestError, match="stream_options must be an object"):
        client.chat.completions.create(model="m", messages=messages, stream=True, stream_options={"include_usage": "yes"})
    # An API that reports no counts answers without usage, as before.
    assert openai_client(serve(apis.ChatWords(), spec=litkit.specs.OpenAIChat())).chat.completions.create(model="m", messages=messages).usage is None


def test_openai_client_lists_the_model(serve):
    server = serve(apis.ChatWords(), spec=litkit.specs.OpenAIChat(model="words-1"))
    models = openai_client(server).models.list()
    assert [(m.id, m.object, m.owned_by) for m in models.data] == [("words-1", "model", "litkit")]
    unnamed = serve(apis.ChatWords(), spec=litkit.specs.OpenAIChat())
    assert [m.id for m in openai_client(unnamed).models.list().data] == ["ChatWords"]


def test_closing_the_openai_stream_cancels_generation(serve, events):
    server = serve(apis.ChatWords(events.path, interval=0.005), spec=litkit.specs.OpenAIChat())
    stream = openai_client(server).chat.completions.create(model="m", messages=[{"role": "user", "content": "tick"}], max_tokens=100_000, stream=True)
    received = [next(stream).choices[0].delta.content for _ in range(3)]
    assert received == ["tick", " tick", " tick"]
    stream.close()
    events.wait_for("finally")
    made = len(events.named("yield"))
    assert made < 1000, f"generation went on after the client closed the stream ({made} tokens)"
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the request to be counted cancelled")


def test_a_non_streaming_request_whose_client_left_stops_generating(serve, events):
    """Regression guard: a non-streamed answer is collected in the worker, which checks for a
    departed client between chunks instead of generating the whole reply for nobody."""
    server = serve(apis.ChatWords(events.path, interval=0.005), spec=litkit.specs.OpenAIChat())
    with pytest.raises(openai.APITimeoutError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=0.5).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "tick"}], max_tokens=100_000
        )
    events.wait_for("finally")
    assert len(events.named("yield")) < 1000


def test_a_predict_that_returns_the_whole_reply(serve):
    server = serve(apis.ChatOnce(), spec=litkit.specs.OpenAIChat())
    client = openai_client(server)
    messages = [{"role": "user", "content": "hi"}]
    assert client.chat.completions.create(model="m", messages=messages).choices[0].message.content == "you said: hi"
    deltas = [c.choices[0].delta.content for c in client.chat.completions.create(model="m", messages=messages, stream=True)]
    assert deltas == ["you said: hi", None]


def test_bad_requests_and_failures_reach_the_openai_client_with_their_message(serve):
    server = serve(apis.ChatWords(), spec=litkit.specs.OpenAIChat())
    client = openai_client(server)
    with pytest.raises(openai.BadRequestError, match="messages must be a non-empty list"):
        client.chat.completions.create(model="m", messages=[])
    with pytest.raises(openai.InternalServerError, match="ValueError: the model failed"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "fail"}])
    with pytest.raises(openai.InternalServerError, match="ValueError: the model failed"):
        list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "fail"}], stream=True))
    # After the first chunk the status is sent already: the stream ends with an error event.
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "ok fail"}], stream=True)
    assert next(stream).choices[0].delta.content == "ok"
    with pytest.raises(openai.APIError, match="ValueError: the model failed"):
        next(stream)
    stream.close()
    # litkit's own client reads the same error shape.
    with pytest.raises(litkit.HTTPError, match="messages must be a non-empty list"):
        server.predict({"model": "m", "messages": []})


def test_an_openai_endpoint_beside_a_plain_one_under_a_prefix(serve):
    server = serve({"/double": apis.Doubler(), "/llm": litkit.Endpoint(apis.ChatWords(), spec=litkit.specs.OpenAIChat(model="w"))})
    assert server.paths == ["/double", "/llm/v1/chat/completions"]
    client = openai_client(server, "/llm")
    assert client.chat.completions.create(model="w", messages=[{"role": "user", "content": "a b"}]).choices[0].message.content == "a b"
    assert [m.id for m in client.models.list().data] == ["w"]
    assert server.predict({"input": 2}) == {"output": 4}
    info = requests.get(server.url + "/info", timeout=10).json()
    assert info["endpoints"][1] == {**info["endpoints"][1], "spec": "openai-chat", "models": "/llm/v1/models"}


def test_spec_arguments_are_checked():
    with pytest.raises(ValueError, match=r"with spec=\.\.\. the API is served at the spec's paths"):
        litkit.serve(apis.ChatWords(), spec=litkit.specs.OpenAIChat(), api_path="/chat", port=0)
    with pytest.raises(TypeError, match="spec must be a litkit spec such as litkit.specs.OpenAIChat()"):
        litkit.serve(apis.ChatWords(), spec="openai", port=0)
    with pytest.raises(ValueError, match="model must be a non-empty str or None"):
        litkit.specs.OpenAIChat(model="")


def test_the_spec_module_does_not_load_the_server_side():
    """Workers load the spec to wrap every answer: it must stay stdlib-only like the worker, and
    neither loads the clients (the package imports them lazily)."""
    import subprocess
    import sys

    heavy = ("tornado", "ipywidgets", "litkit.server", "litkit.server.endpoints", "litkit.client", "litkit.client.async_client", "http.client")
    code = f"import sys, litkit.specs, litkit.worker; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_chat_spec_batches_streams_under_serve_and_a_stream_started_meanwhile_joins_them(serve, events):
    """Before, litkit.serve() refused spec=OpenAIChat() with max_batch_size above 1 (only
    litkit.LitServer wrapped a batch's streams in the spec's envelopes): now each request of a
    batched stream gets its own chat.completion.chunk events, and a stream started while the batch
    streams joins it (the API is joinable) instead of waiting for it to end (issue 27)."""
    server = serve(apis.ChatWordsBatched(events.path, interval=0.01), spec=litkit.specs.OpenAIChat(), max_batch_size=4, batch_timeout=0.0)
    client = openai_client(server)
    running = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "tick tock"}], max_tokens=5000, stream=True)
    read = [next(running).choices[0].delta.content for _ in range(3)]
    joined = list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "one two three"}], stream=True))
    assert [c.choices[0].delta.content for c in joined] == ["one", " two", " three", None]
    assert [c.choices[0].finish_reason for c in joined] == [None, None, None, "stop"]
    read += [next(running).choices[0].delta.content for _ in range(3)]
    assert read == ["tick", " tock", " tick", " tock", " tick", " tock"]  # its own reply, never interrupted
    running.close()
    assert [e["size"] for e in events.named("batch")] == [1] and {e["rows"] for e in events.named("step")} == {1, 2}
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the running stream counted cancelled")
