"""Where the API's code came from, so a worker's tracebacks show the user's lines.

cloudpickle sends a class from a notebook cell or a script's ``__main__`` by value and names the
file of every function it rebuilds ``<dynamic-code>``, so a traceback from a hook read
``File "<dynamic-code>", line 12`` with no source. The serving process knows each function's real
file (a cell's is IPython's ``/tmp/ipykernel_.../NNN.py``, whose lines live only in its
``linecache``): ``code_origins`` records it, with the lines of files not on disk, and
``restore_code_origins`` in the worker gives the rebuilt functions their names back and puts the
lines in the worker's ``linecache``.

Both processes; stdlib only.
"""

from __future__ import annotations

import linecache
import os
import types
from typing import Any, Iterator

from ..api import LitAPI

__all__ = ["code_origins", "restore_code_origins"]

_DYNAMIC = "<dynamic-code>"
_MAX_FUNCTIONS = 500  # a bound on the walk through what the hooks call


def code_origins(api: Any) -> dict[str, Any]:
    """For the serving process: the file of each function of ``api``'s class (and of the module-level
    functions they call), keyed by qualified name and first line, and the lines of those files that
    exist only in this process's ``linecache`` (notebook cells)."""
    functions: dict[str, str] = {}
    files: dict[str, list[str]] = {}
    for function in _functions(api):
        filename = function.__code__.co_filename
        functions[_key(function)] = filename
        if filename not in files and not os.path.exists(filename):
            lines = linecache.getlines(filename)
            if lines:
                files[filename] = lines
    return {"functions": functions, "files": files}


def restore_code_origins(api: Any, origins: dict[str, Any] | None) -> None:
    """In the worker: rename the ``<dynamic-code>`` functions of ``api`` to their real files, and
    make the lines of files the worker cannot read available to tracebacks."""
    if not origins:
        return
    for filename, lines in origins["files"].items():
        linecache.cache[filename] = (sum(map(len, lines)), None, list(lines), filename)  # no mtime: never evicted
    known = origins["functions"]
    for function in _functions(api):
        filename = known.get(_key(function))
        if filename is not None and function.__code__.co_filename == _DYNAMIC:
            function.__code__ = _renamed(function.__code__, filename)


def _key(function: types.FunctionType) -> str:
    return f"{function.__qualname__}:{function.__code__.co_firstlineno}"


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    constants = tuple(_renamed(c, filename) if isinstance(c, types.CodeType) and c.co_filename == _DYNAMIC else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=constants)


def _functions(api: Any) -> Iterator[types.FunctionType]:
    """The methods of ``api``'s class and its bases (litkit's own and ``object`` left out), then the
    module-level functions they name, and the ones those name."""
    found: list[types.FunctionType] = []
    for klass in type(api).__mro__:
        if klass is LitAPI or klass is object:
            continue
        for value in vars(klass).values():
            for candidate in (value, getattr(value, "__func__", None), getattr(value, "fget", None)):
                if isinstance(candidate, types.FunctionType) and candidate not in found:
                    found.append(candidate)
    index = 0
    while index < len(found) and len(found) < _MAX_FUNCTIONS:
        function = found[index]
        index += 1
        for name in function.__code__.co_names:
            value = function.__globals__.get(name)
            if isinstance(value, types.FunctionType) and value not in found:
                found.append(value)
    yield from found
