"""LitServe's documented example APIs and import paths under ``import litkit as ls`` (issue 26):
``ls.test_examples``, ``litkit.specs.openai``, ``litkit.schema.image``, over real HTTP."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json

import pytest
import requests

import litkit as ls
from litkit.specs.openai import ChatCompletionRequest, ChatMessage, OpenAISpec
from runner import run  # noqa: F401 - the fixture

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_the_simple_examples_answer_as_in_litserves_docs(run):
    """The bug this pins: ls.test_examples was refused, so LitServe's documented code failed at once."""
    simple = run(ls.LitServer(ls.test_examples.SimpleLitAPI()))
    assert requests.post(simple.url + "/predict", json={"input": 4.0}, timeout=60).json() == {"output": 16.0}
    batched = run(ls.LitServer(ls.test_examples.SimpleBatchedAPI(max_batch_size=4, batch_timeout=0.2)))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda x: requests.post(batched.url + "/predict", json={"input": x}, timeout=60).json(), [1.0, 2.0, 3.0, 4.0]))
    assert answers == [{"output": 1.0}, {"output": 4.0}, {"output": 9.0}, {"output": 16.0}]
    with pytest.warns(DeprecationWarning, match="deprecated, as in LitServe"):  # the docstring's own form
        lit_server = ls.LitServer(ls.test_examples.SimpleStreamAPI(), stream=True)
    streaming = run(lit_server)
    text = requests.post(streaming.url + "/predict", json={"input": "Hello"}, timeout=60).text
    assert [json.loads(line) for line in text.splitlines()] == [{"output": f"{i}: Hello"} for i in range(3)]


@pytest.mark.parametrize(
    "api, expected",
    [
        (ls.test_examples.TestAPI, {"role": "assistant", "content": "This is a generated output", "tool_calls": None}),
        (ls.test_examples.TestAPIWithCustomEncode, {"role": "assistant", "content": "This is a custom encoded output", "tool_calls": None}),
        (
            ls.test_examples.TestAPIWithToolCalls,
            {"role": "assistant", "content": "", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "function_1", "arguments": '{"arg_1": "arg_1_value"}'}}]},
        ),
    ],
    ids=["TestAPI", "custom encode", "tool calls"],
)
def test_the_openai_examples(run, api, expected):
    server = run(ls.LitServer(api(spec=OpenAISpec())))
    answer = requests.post(server.url + "/v1/chat/completions", json=CHAT, timeout=60).json()
    assert answer["choices"][0]["message"] == expected


def test_litserves_import_paths_and_keyword_messages():
    message = ChatMessage(role="assistant", content="hi")
    assert (message.role, message.content, message.model_dump()) == ("assistant", "hi", {"role": "assistant", "content": "hi"})
    request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "x"}])
    assert request.messages[0].content == "x" and request.temperature == 0.7
    assert ls.OpenAISpec is OpenAISpec


def test_image_schemas_round_trip(run):
    pytest.importorskip("PIL")
    from PIL import Image

    from litkit.schema.image import ImageOutput
    import litserve_apis as apis

    buffer = io.BytesIO()
    Image.new("RGB", (3, 2), "red").save(buffer, format="PNG")
    server = run(ls.LitServer(apis.Mirror()))
    answer = requests.post(server.url + "/predict", json={"image_data": base64.b64encode(buffer.getvalue()).decode()}, timeout=60)
    flipped = Image.open(io.BytesIO(base64.b64decode(answer.json()["image"])))
    assert flipped.size == (3, 2) and flipped.getpixel((0, 0)) == (255, 0, 0)
    refused = requests.post(server.url + "/predict", json={"image_data": "not base64!"}, timeout=60)
    assert refused.status_code == 422
    with pytest.raises(Exception, match="must be a PIL Image"):  # pydantic wraps the TypeError
        ImageOutput(image="text").model_dump()


def test_openai_spec_with_batching_as_litserve(run):
    """The bug this pins: OpenAISpec with max_batch_size above 1 was refused; LitServe batches the
    requests and streams each its share (ls.test_examples.OpenAIBatchContext)."""
    server = run(ls.LitServer(ls.test_examples.OpenAIBatchContext(spec=OpenAISpec(), max_batch_size=2, batch_timeout=0.5)))
    greeting = "Hi! It's nice to meet you. Is there something I can help you with or would you like to chat? "

    def chat(stream: bool) -> str:
        answer = requests.post(server.url + "/v1/chat/completions", json={**CHAT, "stream": stream}, timeout=60)
        assert answer.status_code == 200, answer.text
        if not stream:
            return answer.json()["choices"][0]["message"]["content"]
        events = [line[len("data: "):] for line in answer.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        return "".join(json.loads(event)["choices"][0]["delta"].get("content") or "" for event in events[:-1])

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert list(pool.map(chat, [True, False])) == [greeting, greeting]


def test_openai_spec_with_an_async_api(run):
    """The bug this pins: OpenAISpec with async hooks (enable_async=True) was refused."""
    import litserve_apis as apis

    server = run(ls.LitServer(apis.AsyncChat()))
    body = {"model": "m", "messages": [{"role": "user", "content": "one two"}]}
    whole = requests.post(server.url + "/v1/chat/completions", json=body, timeout=60).json()
    assert whole["choices"][0]["message"]["content"] == "one two "
    streamed = requests.post(server.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60).text
    events = [line[len("data: "):] for line in streamed.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(event)["choices"][0]["delta"].get("content") or "" for event in events[:-1]) == "one two "
