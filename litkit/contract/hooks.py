"""How the worker calls the hooks: a spec's input, a pydantic model when ``decode_request``'s
annotation asks for one, and a ``context`` for the hooks that declare one.

* With a spec, an API that keeps LitAPI's own ``decode_request`` gets ``spec.default_input(request)``
  (LitServe's convention: an embeddings request's ``input``).
* ``def decode_request(self, request: Person)`` with ``Person`` a pydantic ``BaseModel``: the body is
  validated into a ``Person`` first (``Person.model_validate``); a body that does not fit is a 422
  naming each field and what is wrong with it, as LitServe (FastAPI) answers. pydantic is never
  imported here: the annotation is a class the API's own module imported.
* A hook with a parameter named ``context`` (``def predict(self, x, context)``, LitServe's) gets a
  dict made for the request, the same one in each of its hooks (with a spec, it starts with the
  request's options); under batching, ``batch``, ``predict`` and ``unbatch`` get the list of the
  batch's dicts, and ``decode_request`` and ``encode_response`` their request's own.

Every backend calls hooks through here: the worker's sync, batched and async loops and a Ray Serve
replica. Stdlib only: this module runs in worker processes.
"""

from __future__ import annotations

import functools
import inspect
import traceback
import typing
from typing import Any

from ..api import LitAPI
from ..errors import HTTPError

__all__ = [
    "aclose_quietly", "awaited", "call_hook", "set_device", "close_quietly", "context_hooks", "decode_input", "request_model",
    "resolve_request_model", "REQUEST_MODEL",
]

HOOKS = ("decode_request", "predict", "encode_response", "batch", "unbatch")

# The attribute the serving process sets on an API to the model it resolved (see resolve_request_model).
REQUEST_MODEL = "_litkit_request_model"
_UNRESOLVED = object()


def resolve_request_model(api: Any) -> None:
    """Resolve ``decode_request``'s model here, in the serving process, and keep it on the API.

    A string annotation (``from __future__ import annotations``) names a class of the API's module,
    which a worker may not be able to import (a notebook's ``__main__``, a module cloudpickled by
    value); the class itself travels with the API instead.
    """
    try:
        setattr(api, REQUEST_MODEL, request_model(type(api)))  # type: ignore[arg-type]  # a class is hashable: mypy checks type[X] against X's instances
    except AttributeError:  # __slots__: the worker resolves it itself
        pass


@functools.lru_cache(maxsize=64)
def context_hooks(api_class: type) -> frozenset[str]:
    """The hooks of ``api_class`` that declare a ``context`` parameter."""
    names = set()
    for name in HOOKS:
        try:
            if "context" in inspect.signature(getattr(api_class, name)).parameters:
                names.add(name)
        except (AttributeError, TypeError, ValueError):
            continue
    return frozenset(names)


def set_device(api: Any, device: str) -> None:
    """``api.device = device`` before ``setup(device)``, as LitServe sets it (``self.device`` in any
    hook); an API whose class made ``device`` read-only keeps its own."""
    try:
        api.device = device
    except AttributeError:
        pass


def call_hook(api: LitAPI, name: str, context: Any, *args: Any) -> Any:
    """``api.<name>(*args)``, with ``context=context`` when that hook declares it."""
    hook = getattr(api, name)
    if name in context_hooks(type(api)):  # type: ignore[arg-type]  # a class is hashable: mypy checks type[X] against X's instances
        return hook(*args, context=context)
    return hook(*args)


def decode_input(api: LitAPI, spec: Any, request: Any, context: Any = None) -> Any:
    """What ``predict`` receives for one parsed request body.

    Raises:
        HTTPError: 422 when the body does not fit the hook's pydantic model.
        Exception: whatever ``decode_request`` raises.
    """
    if spec is not None and _is_litapis_own(getattr(type(api), "decode_request", None)):
        return spec.default_input(request)
    model = getattr(api, REQUEST_MODEL, _UNRESOLVED)
    if model is _UNRESOLVED:
        model = request_model(type(api))  # type: ignore[arg-type]  # a class is hashable: mypy checks type[X] against X's instances
    if model is not None:
        request = _validated(model, request)
    return call_hook(api, "decode_request", context, request)


@functools.lru_cache(maxsize=64)
def request_model(api_class: type) -> Any:
    """The pydantic model that ``api_class.decode_request`` annotates its request with, or None."""
    hook = getattr(api_class, "decode_request", None)
    if hook is None or _is_litapis_own(hook):
        return None
    hook = inspect.unwrap(hook)  # a wrapper's annotations resolve in the wrapped function's module
    parameters = list(inspect.signature(hook).parameters)
    if len(parameters) < 2:
        return None
    try:
        hints = typing.get_type_hints(hook)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve is no model
        hints = {}
    annotation = hints.get(parameters[1])
    if isinstance(annotation, type) and callable(getattr(annotation, "model_validate", None)):
        return annotation
    return None


def _is_litapis_own(hook: Any) -> bool:
    """Whether ``hook`` is LitAPI's own ``decode_request`` (perhaps wrapped, e.g. by litkit.compat's callbacks)."""
    return hook is not None and inspect.unwrap(hook) is LitAPI.decode_request


def _validated(model: Any, request: Any) -> Any:
    try:
        return model.model_validate(request)
    except Exception as error:  # pydantic's ValidationError, recognised by its errors()
        errors = getattr(error, "errors", None)
        if not callable(errors):
            raise
        fields = "; ".join(f"{'.'.join(str(part) for part in item.get('loc', ())) or 'body'}: {item.get('msg', '')}" for item in errors())
        raise HTTPError(422, f"request body does not match {model.__name__}: {fields}") from None


async def awaited(value: Any) -> Any:
    """A hook's return value, awaited when the hook is ``async def`` (anything awaitable is awaited,
    a coroutine, a Future or an object with ``__await__``)."""
    if inspect.isawaitable(value):
        return await value
    return value


def close_quietly(*generators: Any) -> None:
    """``close()`` each generator or iterator that has one, in order: GeneratorExit reaches user code
    at its ``yield`` and its ``finally`` runs. An error there is printed (it lands in the worker's or
    the replica's log) and the others are still closed."""
    for generator in generators:
        close = getattr(generator, "close", None)
        if close is None:
            continue
        try:
            close()
        except Exception:  # noqa: BLE001 - e.g. a generator that yields in its finally
            traceback.print_exc()


async def aclose_quietly(*generators: Any) -> None:
    """``close_quietly`` for async generators too: ``aclose()`` where there is one, else ``close()``."""
    for generator in generators:
        try:
            if hasattr(generator, "aclose"):
                await generator.aclose()
            elif hasattr(generator, "close"):
                generator.close()
        except Exception:  # noqa: BLE001 - e.g. a generator that yields in its finally
            traceback.print_exc()
