"""The page at ``/`` and ``/openapi.json`` over HTTP: what is served, to whom, and that the document is
valid OpenAPI 3.1 (``openapi-spec-validator``, in the test extra). The page in a browser is
``test_page_browser.py``."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

import cloudpickle
import pytest
from pydantic import BaseModel

import apis
import litkit
from litkit.server.page import root_answer
from litkit.server.requests_doc import example_from_schema

cloudpickle.register_pickle_by_value(sys.modules[__name__])

KEY = "page-test-key-0123456789"


class Address(BaseModel):
    city: str = "Paris"
    zip: str


class Order(BaseModel):
    item: str
    count: int = 2
    address: Address
    note: str | None = None


class Orders(litkit.LitAPI):
    def decode_request(self, request: Order) -> Order:
        return request

    def predict(self, order: Order) -> dict[str, Any]:
        return {"items": [order.item] * order.count, "city": order.address.city}


class Greeter(litkit.LitAPI):
    request_example = {"name": "Ada"}

    def predict(self, x: Any) -> dict[str, Any]:
        return {"hello": x["name"]}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_the_page_is_one_self_contained_document_whose_policy_allows_only_its_own_code(serve) -> None:
    server = serve(apis.Doubler())
    status, headers, body = get(server.url + "/", {"Accept": "text/html"})
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    html = body.decode()
    assert "//litkit:js" not in html and "/*litkit:css*/" not in html  # both put inline
    assert "<script src" not in html and "<link rel=\"stylesheet\"" not in html and "http://" not in html and "https://" not in html
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    assert "script-src 'sha256-" in policy and "'unsafe-inline'" not in policy
    assert get(server.url + "/docs")[2] == body
    # The page is open like /health; it passes the Host check like every path.
    assert get(server.url + "/", {"Host": "evil.example:80"})[0] == 403


def test_openapi_document_is_valid_openapi_3_1_with_the_pydantic_schema_and_example(serve) -> None:
    from openapi_spec_validator import validate

    server = serve({"/order": Orders(), "/greet": Greeter(), "/tick": apis.Ticker(), "/chat": litkit.Endpoint(apis.ChatWords(), spec=litkit.specs.OpenAIChat()), "/embed": litkit.Endpoint(apis.Doubler(), spec=litkit.specs.OpenAIEmbeddingSpec())})
    status, headers, body = get(server.url + "/openapi.json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    document = json.loads(body)
    validate(document)  # raises on any departure from the OpenAPI 3.1 schema
    assert document["openapi"] == "3.1.0"
    order = document["paths"]["/order"]["post"]
    body_json = order["requestBody"]["content"]["application/json"]
    assert body_json["schema"] == {"$ref": "#/components/schemas/Order"}
    assert body_json["example"] == {"item": "", "count": 2, "address": {"city": "Paris", "zip": ""}, "note": None}
    # pydantic's $defs live in components: a "#/$defs/..." ref would resolve against the document.
    assert document["components"]["schemas"]["Order"]["properties"]["address"] == {"$ref": "#/components/schemas/Address"}
    assert "multipart/form-data" in order["requestBody"]["content"]
    assert set(order["responses"]["200"]["content"]) == {"application/json"}
    assert "401" not in order["responses"]
    assert document["paths"]["/greet"]["post"]["requestBody"]["content"]["application/json"]["example"] == {"name": "Ada"}
    tick = document["paths"]["/tick"]["post"]
    assert set(tick["responses"]["200"]["content"]) == {"application/x-ndjson", "text/event-stream"}
    assert tick["requestBody"]["content"]["application/json"]["example"] == {}
    chat = document["paths"]["/chat/v1/chat/completions"]["post"]
    assert chat["x-litkit-spec"] == "openai-chat" and chat["requestBody"]["content"]["application/json"]["example"]["messages"]
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    assert "multipart/form-data" not in chat["requestBody"]["content"]
    assert "/chat/v1/models" in document["paths"]
    embed = document["paths"]["/embed/v1/embeddings"]["post"]
    assert embed["requestBody"]["content"]["application/json"]["example"]["input"] == "hello"
    assert set(embed["responses"]["200"]["content"]) == {"application/json"}
    assert document["paths"]["/health"]["get"]["security"] == []
    assert "security" not in document and document["x-litkit-api-key"] is False
    # The document is the server's: each call answers the same.
    assert get(server.url + "/openapi.json")[2] == body


def test_with_an_api_key_the_page_is_open_and_the_document_needs_the_key(serve) -> None:
    from openapi_spec_validator import validate

    server = serve(apis.Doubler(), api_key=KEY)
    assert get(server.url + "/")[0] == 200
    status, headers, body = get(server.url + "/openapi.json")
    assert status == 401 and "API key" in json.loads(body)["error"]
    status, _, body = get(server.url + "/openapi.json", {"X-API-Key": KEY})
    document = json.loads(body)
    validate(document)
    assert document["x-litkit-api-key"] is True
    assert document["security"] == [{"bearer": []}, {"apiKey": []}]
    assert document["components"]["securitySchemes"]["apiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert "401" in document["paths"]["/predict"]["post"]["responses"]
    assert KEY not in body.decode()


def test_the_page_paths_are_reserved_but_an_endpoint_may_take_the_root(serve) -> None:
    for path in ("/docs", "/openapi.json"):
        with pytest.raises(ValueError, match="other than /health"):
            litkit.serve(apis.Doubler(), api_path=path, port=0)
    server = serve(apis.Doubler(), api_path="/")  # LitServer's specs live under the prefix "/"
    assert server.predict({"input": 2}) == {"output": 4}
    assert get(server.url + "/")[0] == 405
    assert get(server.url + "/docs")[1]["Content-Type"].startswith("text/html")  # the page is still there


def test_litserver_answers_litserve_running_unless_the_client_asks_for_html() -> None:
    assert root_answer("text/html,application/xhtml+xml,*/*;q=0.8", "litserve running") == "page"
    assert root_answer("*/*", "litserve running") == "text"
    assert root_answer(None, "litserve running") == "text"
    assert root_answer(None, None) == "page"


def test_example_from_schema_uses_examples_defaults_enums_and_types() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "examples": ["x"]},
            "b": {"enum": ["red", "blue"]},
            "c": {"type": "array", "items": {"type": "integer"}},
            "d": {"anyOf": [{"type": "null"}, {"type": "number"}]},
            "e": {"$ref": "#/$defs/Self"},
        },
        "$defs": {"Self": {"type": "object", "properties": {"again": {"$ref": "#/$defs/Self"}}}},
    }
    example = example_from_schema(schema)
    assert example["a"] == "x" and example["b"] == "red" and example["c"] == [0] and example["d"] == 0.0
    depth = 0
    value = example["e"]
    while isinstance(value, dict) and value.get("again") is not None:  # a recursive model stops
        value, depth = value["again"], depth + 1
    assert depth < 10


def test_the_page_script_never_writes_html() -> None:
    """Everything from a request or an answer is set as text: the script has no HTML sink at all."""
    from litkit.server.page import page

    html, _ = page()
    script = html.decode().split("<script>", 1)[1]
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script
