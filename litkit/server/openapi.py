"""``GET /openapi.json``: an OpenAPI 3.1 document of a server's endpoints, built from its ``ServingState``.

Each endpoint is a ``POST`` with its request body (JSON, with the pydantic model's schema when
``decode_request`` annotates one, and an example; HTML forms for litkit's own endpoints), its
answer (``application/json``, or a stream as ``application/x-ndjson`` and ``text/event-stream``),
and the error bodies litkit sends. A spec's paths are its own (OpenAI chat: SSE or one JSON answer,
``GET /v1/models``). With an API key the document declares both ways of sending it.

The page at ``/`` (``litkit.server.page``) reads this document to draw its request editors; what
only the page needs travels in ``x-litkit-*`` fields, which OpenAPI allows (specification extensions).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from .. import __version__
from .endpoints import EndpointState, ServingState

__all__ = ["openapi_document", "PAGE_PATHS"]

# The page's own paths (litkit.server.page), left out of the endpoints' names.
PAGE_PATHS = ("/", "/docs", "/openapi.json")

_ERRORS = {
    "400": "the body is not valid JSON, or decode_request could not use it",
    "401": "missing or wrong API key",
    "403": "a foreign Origin, or a non-loopback Host on a loopback server",
    "413": "the body is larger than the endpoint's max_body_size",
    "422": "the body does not fit the request model",
    "500": "a hook raised, or a worker died",
    "503": "the queue is full, the server is stopping, or every worker is down",
    "504": "no answer within the endpoint's timeout",
}
_REQUEST_ID = {"X-Request-ID": {"$ref": "#/components/headers/RequestId"}}


def openapi_document(serving: ServingState) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every path ``serving`` answers."""
    components: dict[str, Any] = {
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {"error": {"type": "string"}, "request_id": {"type": "string"}},
                "required": ["error"],
            },
            "OpenAIError": {
                "type": "object",
                "properties": {
                    "error": {"type": "object", "properties": {"message": {"type": "string"}, "type": {"type": "string"}, "code": {"type": "integer"}}},
                    "request_id": {"type": "string"},
                },
            },
        },
        "headers": {"RequestId": {"description": "the request's id (the client's X-Request-ID when it sent a sane one)", "schema": {"type": "string"}}},
    }
    keyed = serving.access.api_key is not None
    paths: dict[str, Any] = {}
    for endpoint in serving.endpoints:
        paths[endpoint.path] = {"post": _operation(endpoint, components["schemas"], keyed)}
        for name, path in endpoint.extra_paths.items():
            paths[path] = {"get": _get(f"{endpoint.api_name}: the spec's {name}", "application/json", keyed)}
    paths["/health"] = {"get": {**_get("ready to serve?", "application/json", False), "security": []}}
    paths["/info"] = {"get": _get("the server's configuration and endpoints", "application/json", keyed)}
    paths["/metrics"] = {"get": _get("Prometheus metrics", "text/plain", keyed)}
    paths["/openapi.json"] = {"get": _get("this document", "application/json", keyed)}
    names = list(dict.fromkeys(endpoint.api_name for endpoint in serving.endpoints))
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": ", ".join(names),
            "version": __version__,
            "description": "Served by litkit. Streams end early when the client hangs up; the page at / calls each endpoint.",
        },
        # Relative to this document, so it holds behind a notebook proxy or litkit's Jupyter route too.
        "servers": [{"url": "."}],
        "paths": paths,
        "components": components,
        "x-litkit-api-key": keyed,
    }
    if keyed:
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        document["security"] = [{"bearer": []}, {"apiKey": []}]
    return document


def _operation(endpoint: EndpointState, schemas: dict[str, Any], keyed: bool) -> dict[str, Any]:
    spec = endpoint.spec
    described = endpoint.plan.request
    schema = _register(described["schema"], schemas) if described["schema"] is not None else {}
    content: dict[str, Any] = {"application/json": {"schema": schema, "example": described["example"]}}
    if spec is None:
        form = {"type": "object", "description": "HTML form fields: decode_request receives a dict of str values and uploads (.filename, .content_type, .file)"}
        content["multipart/form-data"] = {"schema": form}
        content["application/x-www-form-urlencoded"] = {"schema": form}
    answers: dict[str, Any]
    if spec is not None and spec.always_sse:
        # OpenAI chat: "stream": true in the body gives server-sent events, else one JSON answer.
        answers = {"application/json": {"schema": {}}, "text/event-stream": {"schema": {"type": "string"}}}
        what = "the answer, or with \"stream\": true server-sent events (data: lines, then data: [DONE])"
    elif endpoint.stream:
        answers = {
            "application/x-ndjson": {"schema": {"type": "string"}},
            "text/event-stream": {"schema": {"type": "string"}},
        }
        what = ("the chunks as they are produced: one JSON line each (application/x-ndjson), or server-sent "
                "events with Accept: text/event-stream; an error mid-stream ends it with an error line")
    else:
        answers = {"application/json": {"schema": {}}}
        what = "the JSON of encode_response"
    error = {"$ref": "#/components/schemas/" + ("Error" if spec is None else "OpenAIError")}
    responses: dict[str, Any] = {"200": {"description": what, "headers": _REQUEST_ID, "content": answers}}
    for status, reason in _ERRORS.items():
        if status == "401" and not keyed:
            continue
        responses[status] = {"description": reason, "headers": _REQUEST_ID, "content": {"application/json": {"schema": error}}}
    operation: dict[str, Any] = {
        "operationId": "post_" + (re.sub(r"[^A-Za-z0-9]+", "_", endpoint.path).strip("_") or "root"),
        "summary": endpoint.api_name,
        "description": (
            f"Request body example from {described['source']}." if described["source"]
            else "decode_request receives the JSON body (or an HTML form's fields, as a dict)."
        ),
        "requestBody": {"required": True, "content": content},
        "responses": responses,
        "x-litkit-stream": endpoint.stream,
        "x-litkit-spec": spec.name if spec is not None else None,
    }
    return operation


def _get(summary: str, media_type: str, keyed: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": summary, "headers": _REQUEST_ID, "content": {media_type: {"schema": {}}}}}
    if keyed:
        responses["401"] = {"description": _ERRORS["401"], "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {"summary": summary, "responses": responses}


def _register(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """Move a pydantic schema's ``$defs`` into ``components/schemas`` (``#/$defs/X`` would resolve
    against the document's root, not the schema's) and return a ``$ref`` to the model itself."""
    schema = copy.deepcopy(schema)
    definitions = schema.pop("$defs", {})
    renamed = {name: _free_name(name, definition, schemas) for name, definition in definitions.items()}
    title = schema.get("title")
    own = _free_name(title if isinstance(title, str) else "Request", schema, schemas)

    def point(value: Any) -> Any:
        if isinstance(value, dict):
            reference = value.get("$ref")
            if isinstance(reference, str) and reference.startswith("#/$defs/"):
                value = {**value, "$ref": "#/components/schemas/" + renamed.get(reference[len("#/$defs/"):], "missing")}
            return {key: point(item) for key, item in value.items()}
        if isinstance(value, list):
            return [point(item) for item in value]
        return value

    for name, definition in definitions.items():
        schemas[renamed[name]] = point(definition)
    schemas[own] = point(schema)
    return {"$ref": "#/components/schemas/" + own}


def _free_name(name: str, schema: Any, schemas: dict[str, Any]) -> str:
    """``name``, or ``name2``, ``name3``...: the first not taken by a different schema."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name) or "Schema"  # what components/schemas keys allow
    candidate, number = name, 1
    while candidate in schemas and json.dumps(schemas[candidate], sort_keys=True) != json.dumps(schema, sort_keys=True):
        number += 1
        candidate = f"{name}{number}"
    return candidate
