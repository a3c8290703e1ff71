"""Request objects with attribute access over parsed JSON, as LitServe's pydantic request models read.

``ChatCompletionRequest(body)`` gives ``request.messages[0].content``, ``request.max_tokens`` (None
when absent), ``request.temperature`` (OpenAI's default when absent); ``model_dump()`` returns the
JSON. Stdlib only, no pydantic: worker processes import this module, and a spec must not cost a
pydantic import per worker.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = ["Record", "ChatCompletionRequest", "ChatMessage", "EmbeddingRequest", "check_chat_request"]


class Record:
    """A JSON object read by attribute: nested objects are Records, lists of objects lists of Records.

    A field the JSON lacks reads as its class default (``defaults``), else None; ``record["key"]``
    and ``record.get("key")`` read the JSON as it came.
    """

    defaults: dict[str, Any] = {}
    _nested: dict[str, type[Record]] = {}

    def __init__(self, data: dict[str, Any] | None = None, **fields: Any) -> None:
        """``Record(json_dict)``, or by keywords as pydantic models are made: ``ChatMessage(role="user", content="hi")``."""
        data = {**data, **fields} if data is not None else fields
        self._data = data
        for name, value in data.items():
            self.__dict__[name] = self._wrap(name, value)

    def _wrap(self, name: str, value: Any) -> Any:
        kind = self._nested.get(name, Record)
        if isinstance(value, dict):
            return kind(value)
        if isinstance(value, list):
            return [kind(item) if isinstance(item, dict) else item for item in value]
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self.defaults.get(name)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def model_dump(self, **_: Any) -> dict[str, Any]:
        """The fields, defaults included, as plain JSON values."""
        return {**self.defaults, **self._data}

    dict = model_dump  # pydantic v1's name, which LitServe code still calls

    def __getstate__(self) -> builtins.dict[str, Any]:
        return self._data

    def __setstate__(self, data: builtins.dict[str, Any]) -> None:
        self.__init__(data)  # type: ignore[misc]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and self.model_dump() == other.model_dump()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self._data.items())
        return f"{type(self).__name__}({fields})"


class ChatMessage(Record):
    """One message: ``role``, ``content`` (a str, or a list of parts such as ``{"type": "text", "text": ...}``),
    ``name``, ``tool_calls``, ``tool_call_id``."""


class ChatCompletionRequest(Record):
    """The body of ``POST /v1/chat/completions``, with OpenAI's (and LitServe's) defaults."""

    defaults = {
        "model": "",
        "temperature": 0.7,
        "top_p": 1.0,
        "n": 1,
        "stream": False,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "tool_choice": "auto",
    }
    _nested = {"messages": ChatMessage}


class EmbeddingRequest(Record):
    """The body of ``POST /v1/embeddings``: ``input`` (a str or a list), ``model``, ``dimensions``,
    ``encoding_format`` (``"float"`` or ``"base64"``), ``user``."""

    defaults = {"encoding_format": "float"}

    def ensure_list(self) -> list[Any]:
        return self.input if isinstance(self.input, list) else [self.input]

    def get_num_items(self) -> int:
        return len(self.input) if isinstance(self.input, list) else 1


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return _number(value) and float(value).is_integer()


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _texts(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(item, str) for item in value))


def _objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


# LitServe's ChatCompletionRequest (a pydantic model): each optional field's check, and what it asks for.
_CHAT_FIELDS: dict[str, tuple[Any, str]] = {
    "model": (_text, "a valid string"),
    "temperature": (_number, "a valid number"),
    "top_p": (_number, "a valid number"),
    "n": (_integer, "a valid integer"),
    "max_tokens": (_integer, "a valid integer"),
    "max_completion_tokens": (_integer, "a valid integer"),
    "stop": (_texts, "a valid string or list of strings"),
    "stream": (lambda value: isinstance(value, bool), "a valid boolean"),
    "presence_penalty": (_number, "a valid number"),
    "frequency_penalty": (_number, "a valid number"),
    "user": (_text, "a valid string"),
    "tools": (_objects, "a valid list of objects"),
    "response_format": (lambda value: isinstance(value, dict), "a valid object"),
    "reasoning_effort": (lambda value: value in ("low", "medium", "high"), "'low', 'medium' or 'high'"),
    "metadata": (lambda value: isinstance(value, dict) and all(isinstance(item, str) for item in value.values()), "an object of strings"),
}
_MESSAGE_FIELDS: dict[str, tuple[Any, str]] = {
    "content": (lambda value: isinstance(value, str) or _objects(value), "a valid string or list of content parts"),
    "name": (_text, "a valid string"),
    "tool_calls": (_objects, "a valid list of objects"),
    "tool_call_id": (_text, "a valid string"),
}


def check_chat_request(body: dict[str, Any]) -> None:
    """Check a chat completion body's fields as LitServe's pydantic model does (None is allowed for
    every optional field).

    Raises:
        HTTPError: 422 naming each field that does not fit, as LitServe (FastAPI) answers.
    """
    from ..errors import HTTPError

    problems = []
    for name, (fits, wanted) in _CHAT_FIELDS.items():
        value = body.get(name)
        if value is not None and not fits(value):
            problems.append(f"{name}: Input should be {wanted}")
    messages = body.get("messages")
    if not isinstance(messages, list):
        problems.append("messages: Input should be a valid list" if "messages" in body else "messages: Field required")
    else:
        for index, message in enumerate(messages):
            if not isinstance(message, dict):
                problems.append(f"messages.{index}: Input should be a valid object")
                continue
            if not isinstance(message.get("role"), str):
                problems.append(f"messages.{index}.role: " + ("Input should be a valid string" if "role" in message else "Field required"))
            for name, (fits, wanted) in _MESSAGE_FIELDS.items():
                value = message.get(name)
                if value is not None and not fits(value):
                    problems.append(f"messages.{index}.{name}: Input should be {wanted}")
    if problems:
        raise HTTPError(422, "request body does not match ChatCompletionRequest: " + "; ".join(problems))
