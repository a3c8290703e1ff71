"""The conformance suite's cases: the hook contract stated once, as requests and what a client sees.

Every backend serves the same endpoints (``endpoints()``: one per case, at ``/<case>``, with the
case's options) and must answer each exchange the same way: tests/contract/test_conformance.py runs
them on the in-process server (its sub-interpreter on 3.13, its own process before), and
tests/ray/test_ray_conformance.py on a real local Ray Serve. A backend that cannot honour a case says
so in ``Case.not_on`` with the reason; docs/ray.md's table says the same.

The client side only: the API classes are in tests/contract_apis.py, which the backends import.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import requests

import contract_apis as apis
import litkit
from litkit.specs import OpenAIChat, OpenAIEmbeddingSpec

DEADLINE_S = 60.0


@dataclass
class Seen:
    """What a client saw: the status, the media type, and the body (JSON; or a stream's parts:
    NDJSON lines parsed, or SSE events as ``(event, data)`` with data parsed when it is JSON)."""

    status: int
    media_type: str
    body: Any


@dataclass
class Exchange:
    """One request and what the client must see. ``expect``: the whole JSON body, or a function
    of the body that returns True."""

    body: Any
    status: int
    expect: Any
    accept: str = ""
    path: str = ""  # under the endpoint, for a spec's paths

    def check(self, seen: Seen) -> None:
        assert seen.status == self.status, f"{self.body!r}: status {seen.status}, expected {self.status}; body {seen.body!r}"
        if callable(self.expect):
            assert self.expect(seen.body), f"{self.body!r}: unexpected body {seen.body!r}"
        else:
            assert seen.body == self.expect, f"{self.body!r}: body {seen.body!r}, expected {self.expect!r}"


@dataclass
class Case:
    name: str
    api: Callable[[], litkit.LitAPI]
    exchanges: list[Exchange]
    options: dict[str, Any] = field(default_factory=dict)
    not_on: dict[str, str] = field(default_factory=dict)  # backend -> why it cannot honour the case


def error(message: str, startswith: bool = False) -> Callable[[Any], bool]:
    """An error body with ``message`` (or one that starts with it) and the request's id."""

    def check(body: Any) -> bool:
        text = body.get("error", "")
        return bool(body.get("request_id")) and (text.startswith(message) if startswith else text == message)

    return check


def ndjson(*parts: Any) -> Callable[[Any], bool]:
    return lambda body: body == list(parts)


CHAT = {"model": "words", "messages": [{"role": "user", "content": "hi there"}]}
# The same answers from a sync and an async chat API: whole, and streamed as SSE deltas.
CHAT_ANSWERS = [
            Exchange(CHAT, 200, lambda body: body["choices"][0]["message"]["content"] == "hi there ", path="/v1/chat/completions"),
            Exchange(
                {**CHAT, "stream": True},
                200,
                lambda events: "".join(data["choices"][0]["delta"].get("content") or "" for _, data in events[:-1]) == "hi there " and events[-1] == ("message", "[DONE]"),
                path="/v1/chat/completions",
            ),
]

CASES = [
    Case("plain", apis.Plain, [Exchange({"x": 1}, 200, {"echo": {"x": 1}})]),
    Case("context", apis.WithContext, [Exchange({"n": 2}, 200, {"doubled": 4, "seen": ["decode", "predict", "encode"]})]),
    Case(
        "pydantic",
        apis.Pydantic,
        [
            Exchange({"name": "ada", "age": 36}, 200, {"text": "hello ada", "years_to_100": 64}),
            Exchange({"name": "ada", "age": -1}, 422, error("request body does not match Person: age: Input should be greater than or equal to 0")),
            Exchange({"age": 3}, 422, error("request body does not match Person: name: Field required")),
        ],
    ),
    Case(
        "errors",
        apis.Errors,
        [
            Exchange(b'{"x": ', 400, error("request body is not valid JSON", startswith=True)),
            Exchange({"fail": "decode"}, 400, error("decode_request could not use this request body: ValueError: no use for this body")),
            Exchange({"fail": "http"}, 418, error("short and stout")),
            Exchange({"fail": "fastapi"}, 409, lambda body: body["detail"] == {"why": "taken"} and bool(body["request_id"])),
            Exchange({"fail": "value"}, 500, error("ValueError: bad value 42")),
            Exchange({"fail": "json"}, 500, error("TypeError: encode_response returned a value JSON cannot encode", startswith=True)),
            Exchange({}, 200, {"ok": True}),
        ],
    ),
    Case(
        "embeddings",
        apis.Embedder,
        [
            Exchange({"model": "m", "input": ["ab", "cde"]}, 200, lambda body: [item["embedding"] for item in body["data"]] == [[2.0, 1.0], [3.0, 1.0]], path="/v1/embeddings"),
            Exchange({"model": "m", "input": "ab"}, 200, lambda body: [item["embedding"] for item in body["data"]] == [[2.0, 1.0]], path="/v1/embeddings"),
        ],
        {"spec": OpenAIEmbeddingSpec()},
    ),
    Case(
        "chat",
        apis.Chat,
        [
            *CHAT_ANSWERS,
            Exchange({"model": "words", "messages": "nope"}, 400, lambda body: "messages" in body["error"]["message"], path="/v1/chat/completions"),
        ],
        {"spec": OpenAIChat(model="words")},
    ),
    Case(
        "stream",
        apis.Stream,
        [
            Exchange({"n": 3}, 200, ndjson({"i": 0}, {"i": 1}, {"i": 2})),
            Exchange({"n": 2}, 200, lambda events: events == [("message", {"i": 0}), ("message", {"i": 1}), ("message", "[DONE]")], accept="text/event-stream"),
            Exchange({"n": 3, "fail_at": 1}, 200, lambda lines: lines[0] == {"i": 0} and error("RuntimeError: failed at 1")(lines[1]) and len(lines) == 2),
            Exchange({"n": 3, "fail_at": 0}, 500, error("RuntimeError: failed at 0")),
        ],
    ),
    Case(
        "text_lines",
        apis.TextLines,
        [
            Exchange({}, 500, error("chunk 1 is text with a newline", startswith=True)),
            Exchange({}, 200, lambda events: events == [("message", "one\ntwo"), ("message", "[DONE]")], accept="text/event-stream"),
        ],
    ),
    Case(
        "async",
        apis.Async,
        [
            Exchange({"n": 1}, 200, {"plus_one": 2}),
            Exchange([1], 400, error("decode_request could not use this request body: TypeError", startswith=True)),
        ],
    ),
    Case("async_stream", apis.AsyncStream, [Exchange({"n": 2}, 200, ndjson({"i": 0}, {"i": 1}))]),
    Case(
        "batched",
        apis.Batched,
        [Exchange({"n": 2}, 200, lambda body: body["tripled"] == 6 and body["mine"] == 2 and body["batch_contexts"] >= 1)],
        {"max_batch_size": 4, "batch_timeout": 0.05},
    ),
    Case("log", apis.Logs, [Exchange({"n": 5}, 200, {"logged": 5})]),
    Case(
        "callbacks",
        apis.called,
        [Exchange({}, 200, {"seen": ["before decode", "after decode", "before predict", "after predict", "before encode"]})],
    ),
    Case(
        "async_chat",
        apis.AsyncChat,
        [
            *CHAT_ANSWERS,
        ],
        {"spec": OpenAIChat(model="words")},
    ),
    Case("device", apis.Device, [Exchange({}, 200, {"setup": ["cpu", "cpu"], "predict": "cpu"})]),
    Case(
        "litserve",
        apis.litserve_chunks,
        [
            Exchange({}, 200, ndjson({"part": 1}, {"part": 2})),
            Exchange({"fail": True}, 500, {"detail": "Internal server error"}),
        ],
    ),
]


def endpoints(events: str) -> dict[str, Any]:
    """``{"/<case>": litkit.Endpoint(api, **options)}`` for every case; the stream's hooks write
    to the event file ``events``."""
    made = {}
    for case in CASES:
        api = case.api(events) if case.api is apis.Stream else case.api()
        made[f"/{case.name}"] = litkit.Endpoint(api, **case.options) if case.options else api
    return made


def send(base: str, case: Case, exchange: Exchange) -> Seen:
    """POST the exchange's body to the case's endpoint under ``base`` and read the whole answer."""
    body = exchange.body if isinstance(exchange.body, bytes) else json.dumps(exchange.body).encode()
    headers = {"Content-Type": "application/json"}
    if exchange.accept:
        headers["Accept"] = exchange.accept
    with requests.post(f"{base}/{case.name}{exchange.path}", data=body, headers=headers, timeout=DEADLINE_S, stream=True) as answer:
        media_type = answer.headers.get("Content-Type", "").split(";")[0]
        text = answer.content.decode()
    if media_type == "application/x-ndjson":
        return Seen(answer.status_code, media_type, [json.loads(line) for line in text.splitlines() if line])
    if media_type == "text/event-stream":
        return Seen(answer.status_code, media_type, _events(text))
    return Seen(answer.status_code, media_type, json.loads(text))


def _events(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data.append(line[len("data: ") :])
        joined = "\n".join(data)
        try:
            events.append((name, json.loads(joined)))
        except ValueError:
            events.append((name, joined))
    return events


def check_hang_up(base: str, prefix: str, events: Any) -> None:
    """The stream's client reads two chunks and hangs up: the generator's ``finally`` runs long
    before its 400 chunks (20 s) would have ended. ``events``: conftest.Events of the stream's file."""
    from conftest import ChunkReader, raw_post  # the test side's helpers

    before = len(events.named("finally"))  # the other cases' streams ended already
    sock = raw_post(base, b'{"n": 400, "interval": 0.05}', path=f"{prefix}/stream")
    reader = ChunkReader(sock)
    assert reader.status == 200
    assert [reader.line(), reader.line()] == [b'{"i":0}', b'{"i":1}']
    reader.close()
    sock.close()
    events.wait_for("finally", count=before + 1, deadline_s=DEADLINE_S)
    assert events.named("start")[-1]["n"] == 400


def check_concurrent_batch(base: str) -> None:
    """Four requests at once to the batched endpoint: each gets its own share, whatever the grouping."""
    answers: dict[int, Seen] = {}

    def call(n: int) -> None:
        answers[n] = send(base, next(case for case in CASES if case.name == "batched"), Exchange({"n": n}, 200, None))

    threads = [threading.Thread(target=call, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert sorted(answers) == [0, 1, 2, 3]
    for n, seen in answers.items():
        assert seen.status == 200 and seen.body["tripled"] == 3 * n and seen.body["mine"] == n, seen
