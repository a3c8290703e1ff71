"""A shorter GIL switch interval while a server shares its interpreter's GIL with the caller.

A server on a thread of the caller's interpreter waits for the GIL after every system call on a
request's path (the socket reads and writes, the worker's pipe, the loop's ``epoll``). While a
notebook cell computes in pure Python, CPython hands the GIL over only when the interval
(``sys.getswitchinterval()``, 5 ms by default) has passed, so each of those waits could cost up to
5 ms: 52-72 ms per echo request measured. With ``SWITCH_INTERVAL_S`` the cell is asked to let go
after 0.2 ms instead (figures in docs/benchmarks.md, "A busy kernel").

Process-wide, so only while a server needs it: the first server that starts on a thread sets it,
the last one to stop restores the value from before, never at import. A value the user set in
the meantime is theirs and is left alone. It costs the cell nothing while no other thread wants
the GIL; while a server answers, the cell gives it up more often: at 100 requests a second the
cell ran 6-10% slower, against 4-8% with the default interval (docs/benchmarks.md). That is why
a server runs on a thread only when asked (``LITKIT_SUBINTERPRETER=0``, ``in_this_interpreter()``,
an API whose hooks the server calls itself): one in a sub-interpreter (Python 3.13+) or a process
(3.10-3.12) of its own has a GIL of its own and does not take part.
"""

from __future__ import annotations

import sys
import threading

__all__ = ["SWITCH_INTERVAL_S", "ShortSwitchInterval"]

SWITCH_INTERVAL_S = 0.0002

_lock = threading.Lock()
_holders = 0
_saved = 0.0


class ShortSwitchInterval:
    """``with ShortSwitchInterval():`` keeps the interpreter's switch interval at most
    ``SWITCH_INTERVAL_S`` while any such block runs, in any thread."""

    def __enter__(self) -> ShortSwitchInterval:
        global _holders, _saved
        with _lock:
            if _holders == 0:
                _saved = sys.getswitchinterval()
                if _saved > SWITCH_INTERVAL_S:
                    sys.setswitchinterval(SWITCH_INTERVAL_S)
            _holders += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _holders
        with _lock:
            _holders -= 1
            # Restore only our own value: one the user set while the server ran is theirs.
            if _holders == 0 and abs(sys.getswitchinterval() - min(_saved, SWITCH_INTERVAL_S)) < 1e-9:
                sys.setswitchinterval(_saved)
