"""Sub-interpreters with a GIL of their own (PEP 684), where this Python has them solid enough to
run a server in: the only place that touches CPython's private interpreter modules.

Python 3.13 has ``_interpreters`` (3.14 makes it public as ``concurrent.interpreters``, and keeps
the private module). 3.12 has ``_xxsubinterpreters``, but its 3.12.1 build hangs destroying an
interpreter that imported ``threading`` from another thread, and crashes at exit (``free():
invalid pointer``) after one imported asyncio even when destroyed on its own thread: litkit does
not use it there. Older Pythons have no interpreter with its own GIL.

An interpreter is borrowed for one server and given back when the server has stopped cleanly
(``borrowed``): 3.13.0 does not free all of an interpreter's memory when it is
destroyed (measured: about 3 MiB for a bare one, 12 MiB once it has served with tornado), so
re-running a ``serve()`` cell would otherwise leak that much each time. A borrowed interpreter
looks to its server as a new one would: the caller's environment variables, and none of the
modules an earlier server imported beyond the packages every server imports.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["ENVIRONMENT_VARIABLE", "Interpreter", "InterpreterFailed", "borrowed", "thread_setting", "unavailable_reason"]

# "0" keeps the server on a thread of the caller's interpreter, neither in a sub-interpreter
# (3.13+) nor in a process of its own (3.10-3.12).
ENVIRONMENT_VARIABLE = "LITKIT_SUBINTERPRETER"


class InterpreterFailed(RuntimeError):
    """Code run in a sub-interpreter raised; ``str()`` carries its type, message and traceback."""


def _module() -> Any:
    if sys.version_info < (3, 13):
        return None
    try:
        import _interpreters
    except ImportError:
        return None
    return _interpreters


def unavailable_reason(environ: dict[str, str] | None = None) -> str | None:
    """Why a server cannot run in a sub-interpreter of its own here (None: it can).

    Raises:
        ValueError: ``LITKIT_SUBINTERPRETER`` is neither ``0`` nor ``1``, or asks for ``1`` where
            this Python has no sub-interpreter to give.
    """
    setting = (os.environ if environ is None else environ).get(ENVIRONMENT_VARIABLE, "")
    if setting not in ("", "0", "1"):
        raise ValueError(f"{ENVIRONMENT_VARIABLE} must be 0 (serve from a thread) or 1 (from a sub-interpreter), got {setting!r}")
    if setting == "0":
        return f"{ENVIRONMENT_VARIABLE}=0"
    if _module() is None:
        reason = f"Python {sys.version.split()[0]} has no sub-interpreter with its own GIL that litkit can use (3.13 or later)"
        if setting == "1":
            raise ValueError(f"{ENVIRONMENT_VARIABLE}=1, but {reason}; unset it to serve from a thread")
        return reason
    return None


def thread_setting(environ: dict[str, str] | None = None) -> str | None:
    """``"LITKIT_SUBINTERPRETER=0"`` when it asks to serve from a thread of this interpreter, else
    None (validated as ``unavailable_reason()`` does)."""
    reason = unavailable_reason(environ)
    return reason if reason == f"{ENVIRONMENT_VARIABLE}=0" else None


class Interpreter:
    """One isolated sub-interpreter with its own GIL. ``run`` blocks the calling thread until the
    code returns; one thread at a time may run code in it, any thread."""

    def __init__(self) -> None:
        module = _module()
        if module is None:
            raise RuntimeError(unavailable_reason() or "no sub-interpreters here")
        self._module = module
        # The isolated configuration: its own GIL and object allocator, only extension modules
        # that support several interpreters; no daemon threads (the server starts none).
        self._id = module.create(module.new_config("isolated"))

    def run(self, code: str) -> None:
        """Execute ``code`` in the interpreter.

        Raises:
            InterpreterFailed: the code raised; the message has its traceback.
        """
        failure = self._module.exec(self._id, code)
        if failure is not None:
            raise InterpreterFailed(getattr(failure, "errdisplay", "") or f"{failure.type.__name__}: {failure.msg}")

    def close(self) -> None:
        self._module.destroy(self._id)


# Run in a new interpreter after its prelude: the top-level packages it has imported by then, with
# the standard library's, are what every server there needs. Anything else a server imported
# (the modules of classes its recipe named by reference) is forgotten before the next one, which
# then imports them afresh, as a new interpreter would.
_RECORD_KEPT = """
import sys as _sys
_litkit_kept = frozenset(_sys.stdlib_module_names) | {name.partition(".")[0] for name in _sys.modules}
"""
_FORGET_THE_REST = """
import gc as _gc, sys as _sys
for _name in [name for name in _sys.modules if name.partition(".")[0] not in _litkit_kept]:
    del _sys.modules[_name]
_gc.collect()  # what the server left in cycles goes now, as destroying the interpreter made it go
"""

# Run in every interpreter a server borrows: its ``os.environ`` becomes this one's, as a thread of
# this interpreter would see it (a kept one's was read when it was created). The mapping's own
# dict is set: ``os.environ[key] = ...`` would write the process's environment, which both
# interpreters share and this one has written already.
_ADOPT_ENVIRONMENT = """
import os as _os
_os.environ._data.clear()
for _key, _value in %r.items():
    _os.environ._data[_os.environ.encodekey(_key)] = _os.environ.encodevalue(_value)
"""

_idle: dict[str, list[Interpreter]] = {}  # by the prelude they ran
_idle_lock = threading.Lock()


def _borrow(prelude: str) -> Interpreter:
    """An interpreter for one server, with this interpreter's ``os.environ``: one that a stopped
    server gave back after the same ``prelude``, or a new one that runs it (the imports every
    server there needs).

    Raises:
        InterpreterFailed: a new interpreter's prelude raised (it is destroyed).
    """
    with _idle_lock:
        kept = _idle.get(prelude)
        interpreter = kept.pop() if kept else None
    code = _ADOPT_ENVIRONMENT % (dict(os.environ),)
    if interpreter is None:
        interpreter = Interpreter()
        code = prelude + "\n" + _RECORD_KEPT + code
    try:
        interpreter.run(code)
    except BaseException:
        interpreter.close()
        raise
    return interpreter


def _give_back(interpreter: Interpreter, prelude: str) -> None:
    """Keep ``interpreter``, whose code returned without raising, for the next server; it
    forgets the modules its server imported beyond the prelude's packages first. One that cannot
    is destroyed. Interpreters kept at exit end with this one."""
    try:
        interpreter.run(_FORGET_THE_REST)
    except InterpreterFailed:
        interpreter.close()
        return
    with _idle_lock:
        _idle.setdefault(prelude, []).append(interpreter)


@contextlib.contextmanager
def borrowed(prelude: str) -> Iterator[Interpreter]:
    """An interpreter for one server for the block (see ``_borrow``): kept for the next server if
    the block returns (``_give_back``), destroyed if it raises."""
    interpreter = _borrow(prelude)
    try:
        yield interpreter
    except BaseException:
        interpreter.close()
        raise
    _give_back(interpreter, prelude)
