"""What an endpoint takes, as the page at ``/`` and ``/openapi.json`` describe it: the request body's
JSON schema and an example body.

Worked out in the caller's interpreter, which holds the API object (``EndpointPlan``), and kept as
plain JSON data, so it can travel to the interpreter that serves: that one never sees the API's class.

Where it comes from, first found wins:

* a spec's own schema and example (``OpenAIChat``: a chat request);
* the pydantic model ``decode_request`` annotates its request with (``model_json_schema()``), and an
  example body built from that schema (its ``examples``, defaults, else a value of each type);
* the API's ``request_example`` attribute, a JSON-able body (the demo's ``TokenStreamer`` has one);
* ``{}``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..contract.hooks import request_model

__all__ = ["describe_request", "example_from_schema"]

logger = logging.getLogger("litkit.server")

# How deep example_from_schema follows nested objects and $refs (a recursive model ends there).
_MAX_DEPTH = 6
_TYPE_EXAMPLES: dict[str, Any] = {"string": "", "integer": 0, "number": 0.0, "boolean": False, "null": None}


def describe_request(api: Any, spec: Any, model_name: str) -> dict[str, Any]:
    """``{"schema": <JSON schema or None>, "example": <a body>, "source": <where both came from>}``.

    Args:
        api: the endpoint's API object.
        spec: its spec, or None.
        model_name: the model name a spec's example carries.
    """
    if spec is not None:
        return {"schema": spec.request_schema, "example": spec.example_request(model_name), "source": f"the {spec.name} spec"}
    model = request_model(type(api))  # type: ignore[arg-type]  # a class is hashable: mypy checks type[X] against X's instances
    if model is not None:
        try:
            schema = model.model_json_schema()
            json.dumps(schema)
        except Exception as error:  # noqa: BLE001 - a model pydantic cannot describe still serves
            logger.info("no JSON schema for %s (%s: %s); the page starts from {}", model.__name__, type(error).__name__, error)
        else:
            return {"schema": schema, "example": example_from_schema(schema), "source": f"the pydantic model {model.__name__}"}
    example = getattr(api, "request_example", None)
    if example is not None:
        try:
            json.dumps(example)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"{type(api).__qualname__}.request_example must be a JSON body (dicts, lists, str, numbers), "
                f"got {type(example).__name__}: {error}"
            ) from None
        return {"schema": None, "example": example, "source": f"{type(api).__qualname__}.request_example"}
    return {"schema": None, "example": {}, "source": None}


def example_from_schema(schema: dict[str, Any]) -> Any:
    """A value that fits ``schema`` (a JSON schema as pydantic writes one): its ``examples`` or
    ``default`` where given, else the first enum value, else a plain value of its type."""
    return _example(schema, schema.get("$defs", {}), 0)


def _example(schema: Any, definitions: dict[str, Any], depth: int) -> Any:
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return None
    reference = schema.get("$ref")
    if isinstance(reference, str) and reference.startswith("#/$defs/"):
        return _example(definitions.get(reference.rsplit("/", 1)[1]), definitions, depth + 1)
    if "examples" in schema and isinstance(schema["examples"], list) and schema["examples"]:
        return schema["examples"][0]
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        choices = schema.get(key)
        if isinstance(choices, list) and choices:
            # Optional[X] is anyOf [X, null]: show an X.
            useful = [choice for choice in choices if not (isinstance(choice, dict) and choice.get("type") == "null")]
            return _example((useful or choices)[0], definitions, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties", {})
        return {name: _example(value, definitions, depth + 1) for name, value in properties.items()}
    if kind == "array":
        item = schema.get("items")
        return [_example(item, definitions, depth + 1)] if isinstance(item, dict) and item else []
    return _TYPE_EXAMPLES.get(kind) if isinstance(kind, str) else None
