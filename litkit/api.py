"""The user-facing API class: four hooks a worker calls for every request."""

from __future__ import annotations

import inspect
import sys
import warnings
from typing import Any, Callable

from .options import DEFAULT_API_PATH, check_option, check_path

__all__ = ["FINISHED", "LitAPI", "api_options", "is_streaming_api", "is_async_api", "resolve_stream", "set_log_sink"]

# Where self.log(key, value) goes: set by the worker process to a function that sends it to the
# server (its loggers); None elsewhere.
_log_sink: Callable[[str, Any], None] | None = None


def set_log_sink(sink: Callable[[str, Any], None] | None) -> None:
    """Send every ``LitAPI.log(key, value)`` of this process to ``sink`` (the worker sets it)."""
    global _log_sink
    _log_sink = sink


class _Finished:
    """The type of ``FINISHED``: one object, the same after pickling (it is pickled by name, as this module's global)."""

    def __repr__(self) -> str:
        return "litkit.FINISHED"

    def __reduce__(self) -> str:
        return "FINISHED"


FINISHED = _Finished()
"""In a batched stream, the item that ends one request's stream while the others go on.

A batched ``predict`` yields one item per request at each step; a request whose answer is complete
(its model row reached its end) gets ``litkit.FINISHED`` as its item: its client's stream ends
there, with what the stream sent so far, and the items given for it at later steps are dropped.
Without it, every stream of a batch ends when ``predict`` returns. An ``encode_response`` (or
``unbatch``) that rebuilds the items passes it through as it is."""


class LitAPI:
    """Subclass this and override the hooks; litkit calls them inside each worker process.

    ``setup(device)`` runs once per worker before it takes requests. For each request the worker
    calls ``decode_request`` on the parsed JSON body, ``predict`` on what it returns, and
    ``encode_response`` on the prediction. When ``predict`` is a generator function the endpoint
    streams: ``encode_response`` then receives the generator and returns an iterator of chunks.

    With ``serve(max_batch_size=N)`` the worker decodes each request of a group, calls
    ``batch(inputs)``, then ``predict`` once, then ``unbatch(output)`` (once per yielded item for
    streams), and encodes each request's share. ``predict`` may be ``async def`` or an async
    generator; it then runs on an event loop in the worker (see ``serve(max_concurrency=...)``).

    A batched stream whose ``predict`` can take new requests while it runs sets the class
    attribute ``joinable = True``: a request that arrives while the batch streams (and has fewer
    than ``max_batch_size`` requests still going) is appended to the list ``predict`` received,
    between two of its steps; from the next step on, ``predict`` yields one item for it too
    (docs/batching.md, "Joining a running batch").

    The object is sent to the workers with cloudpickle, so a class defined in a notebook cell works.
    Keep what ``setup`` loads (models, clients, open files) out of ``__init__``: ``__init__`` runs in
    the serving process and its attributes travel to every worker.

    LitServe's constructor options may be given on the API object instead of to ``serve()``
    (``MyAPI(max_batch_size=8, batch_timeout=0.01, stream=True, api_path="/embed", spec=...)``);
    ``serve()`` and ``litkit.LitServer`` honour them. A subclass whose ``__init__`` does not call
    ``super().__init__()`` simply has none. Options the API does not set keep ``serve()``'s.

    Args:
        max_batch_size: requests a worker takes at once (``serve(max_batch_size=...)``).
        batch_timeout: seconds a partial batch waits for more (``serve(batch_timeout=...)``).
        stream: True to insist on streaming, False on a single answer (``serve(stream=...)``).
        api_path: the endpoint's path (``serve(api_path=...)``).
        spec: a spec such as ``litkit.OpenAISpec()`` (``serve(spec=...)``).
        enable_async: True asserts that ``predict`` is ``async def`` or an async generator (litkit
            runs async hooks on an event loop whether or not this is set).
        loop: LitServe's ``"auto"`` only; custom LitServe loops are not supported.
        mcp: not supported yet; must be None.

    Raises:
        ValueError: an option is out of range, or ``enable_async=True`` with a plain ``predict``.
        TypeError: an option litkit cannot honour (a custom ``loop``, ``mcp``).
    """

    # The options given to __init__ (read them with api_options()); a private name, so that no
    # attribute a subclass sets can collide with it.
    _litkit_options: dict[str, Any] = {}
    enable_async: bool = False
    # True: a batched stream's predict takes requests that arrive while it runs (appended to its list).
    joinable: bool = False

    def __init__(
        self,
        *,
        max_batch_size: int | None = None,
        batch_timeout: float | None = None,
        stream: bool | None = None,
        api_path: str | None = None,
        spec: Any = None,
        enable_async: bool = False,
        loop: Any = "auto",
        mcp: Any = None,
    ) -> None:
        options: dict[str, Any] = {}
        name = type(self).__name__
        given = {"max_batch_size": max_batch_size, "batch_timeout": batch_timeout, "stream": stream, "api_path": api_path}
        for option, value in given.items():
            if value is not None:
                options[option] = _checked_option(option, value)
        if spec is not None:
            options["spec"] = spec  # serve() checks that it is a litkit spec
        if not isinstance(enable_async, bool):
            raise ValueError(f"enable_async must be True or False, got {enable_async!r}")
        if enable_async and not is_async_api(self):
            raise ValueError(
                f"enable_async=True but {name}.predict is a plain function; write `async def predict` "
                "(or an async generator), or leave enable_async out"
            )
        if loop not in ("auto", None):
            raise TypeError(
                f"{name}(loop={loop!r}): custom LitServe loops are not supported by litkit; leave loop out "
                "(litkit picks the worker loop from predict: sync, async, batched or streaming)"
            )
        if mcp is not None:
            raise TypeError(f"{name}(mcp=...): MCP endpoints are not supported by litkit yet; leave mcp out (docs/migrating-from-litserve.md)")
        self._litkit_options = options
        self.enable_async = enable_async

    # LitServe's attributes: ``api.max_batch_size = 8`` (or ``self.stream = True`` in an ``__init__``
    # that does not call ``super().__init__()``) sets the option as the constructor does.
    max_batch_size = property(
        lambda self: _option(self, "max_batch_size"),
        lambda self, value: _set_option(self, "max_batch_size", value),
        doc="Requests a worker takes at once (1: no batching).",
    )
    batch_timeout = property(
        lambda self: _option(self, "batch_timeout"),
        lambda self, value: _set_option(self, "batch_timeout", value),
        doc="Seconds a partial batch waits for more.",
    )
    stream = property(
        lambda self: _option(self, "stream"),
        lambda self, value: _set_option(self, "stream", value),
        doc="Whether the endpoint streams (unset: whether ``predict`` is a generator function).",
    )
    api_path = property(lambda self: _option(self, "api_path"), lambda self, value: _set_option(self, "api_path", value), doc="The endpoint's path.")

    @property
    def device(self) -> str | None:
        """The device this worker's ``setup(device)`` got, e.g. ``"cpu"`` or ``"cuda:0"`` (None
        outside a worker), as LitServe sets it."""
        return getattr(self, "_litkit_device", None)

    @device.setter
    def device(self, value: str | None) -> None:
        self._litkit_device = value

    def setup(self, device: str) -> None:
        """Prepare the worker, e.g. load a model. ``device`` is where to put it, e.g. ``"cpu"``."""

    def log(self, key: str, value: Any) -> None:
        """Hand ``(key, value)`` to the server's loggers (``litkit.LitServer(loggers=...)``, or
        ``serve(on_log=...)``), from any hook; LitServe's ``self.log``.

        ``value`` must be JSON-encodable (a number, str, bool, None, list or dict): it travels from
        the worker process to the server as JSON. Outside a worker (no server to send to) it warns
        and drops the entry, as LitServe does without a logger.

        Raises:
            TypeError: ``key`` is not a str, or ``value`` cannot be encoded as JSON.
        """
        if not isinstance(key, str):
            raise TypeError(f"self.log(key, value): key must be a str, got {type(key).__name__}")
        sink = _log_sink
        if sink is None:
            warnings.warn(f"self.log({key!r}, ...) outside a litkit worker: there is no server to send it to; the entry is dropped", stacklevel=2)
            return
        sink(key, value)

    def decode_request(self, request: Any) -> Any:
        """Turn the parsed JSON body into the input of ``predict``. Default: pass it through."""
        return request

    def predict(self, x: Any) -> Any:
        """Compute the answer. A generator function here makes the endpoint streaming."""
        raise NotImplementedError(
            f"{type(self).__name__} must define predict(self, x); subclass litkit.LitAPI and override it"
        )

    def batch(self, inputs: list[Any]) -> Any:
        """Combine decoded inputs into one input for ``predict`` (batching only).

        Default: numpy arrays are stacked with ``numpy.stack``, torch tensors with ``torch.stack``
        (as LitServe's default does); anything else stays a list.
        """
        # Loaded already if any input is an array or a tensor: never import them here.
        for name, kind in (("numpy", "ndarray"), ("torch", "Tensor")):
            module = sys.modules.get(name)
            if module is not None and inputs and all(isinstance(x, getattr(module, kind)) for x in inputs):
                return module.stack(inputs)
        return list(inputs)

    def unbatch(self, output: Any) -> Any:
        """Split ``predict``'s output into one item per request, in order (batching only).

        Default: ``list(output)``, which splits a list, a tuple or an array along its first axis.
        """
        return list(output)

    def encode_response(self, output: Any) -> Any:
        """Turn the prediction into something JSON can encode (for streams: an iterator of chunks).

        Default: pass it through.
        """
        return output


# The options that are also attributes of a LitAPI (LitServe's), with the value each reads when unset.
_ATTRIBUTE_DEFAULTS: dict[str, Any] = {"max_batch_size": 1, "batch_timeout": 0.0, "stream": None, "api_path": DEFAULT_API_PATH}


def _checked_option(option: str, value: Any) -> Any:
    """``value`` for ``option``, checked as ``serve()`` checks it (``litkit.options``).

    Raises:
        ValueError: out of range.
    """
    if option == "stream" and not isinstance(value, bool):
        raise ValueError(f"stream must be True or False, got {value!r}")
    if option == "api_path":
        check_path(value, "api_path")
    else:
        check_option(option, value)
    return value


def _option(api: Any, option: str) -> Any:
    value = api._litkit_options.get(option, _ATTRIBUTE_DEFAULTS[option])
    return is_streaming_api(api) if option == "stream" and value is None else value


def _set_option(api: Any, option: str, value: Any) -> None:
    # A fresh dict: the class-level default ({}) is shared by every API that never set one.
    api._litkit_options = {**api._litkit_options, option: _checked_option(option, value)}


def api_options(api: Any) -> dict[str, Any]:
    """The serving options given to the API's constructor, or set as its attributes
    (``max_batch_size``, ``stream``, ...), by ``serve()``'s names; empty for an API that set none.

    A subclass may also set them as class attributes (``class MyAPI(LitAPI): max_batch_size = 8``).
    """
    options = dict(getattr(api, "_litkit_options", {}))
    for option in _ATTRIBUTE_DEFAULTS:
        static = inspect.getattr_static(type(api), option, None)
        if static is not None and not isinstance(static, property):
            options[option] = _checked_option(option, getattr(api, option))  # a class attribute replaced LitAPI's
    return options


def is_streaming_api(api: Any) -> bool:
    """Whether ``api.predict`` is a generator function (sync or async), which makes the endpoint streaming."""
    predict = getattr(api, "predict", None)
    return any(
        inspect.isgeneratorfunction(f) or inspect.isasyncgenfunction(f)
        for f in (predict, getattr(predict, "__func__", None))
    )


def is_async_api(api: Any) -> bool:
    """Whether ``api.predict`` is ``async def`` or an async generator function: it then runs on an
    event loop in the worker."""
    predict = getattr(api, "predict", None)
    return any(
        inspect.iscoroutinefunction(f) or inspect.isasyncgenfunction(f)
        for f in (predict, getattr(predict, "__func__", None))
    )


def resolve_stream(api: Any, stream: Any) -> bool:
    """Whether the endpoint streams: ``stream`` (None: exactly when ``predict`` is a generator
    function) checked against ``predict`` (the in-process server and Ray Serve alike).

    Raises:
        ValueError: ``stream`` insists on a mode ``predict`` does not have.
    """
    generator = is_streaming_api(api)
    if stream is None:
        return generator
    if stream and not generator:
        raise ValueError(f"stream=True but {type(api).__name__}.predict is not a generator function; make predict `yield` its chunks, or pass stream=None")
    if not stream and generator:
        raise ValueError(f"stream=False but {type(api).__name__}.predict is a generator function; `return` the result instead of yielding, or pass stream=None")
    return bool(stream)
