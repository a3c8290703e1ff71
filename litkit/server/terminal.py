"""Serving from a terminal: ``litkit.run()`` and the ``litkit`` command block until Ctrl+C (or
SIGTERM), show what the workers print, then stop cleanly."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator, Mapping

from ..api import LitAPI
from .launch import serve
from .placement import in_this_interpreter
from .planning import Endpoint
from .server import Server

__all__ = ["banner", "block_until_interrupted", "loading_for_command", "run", "serve_for_a_terminal"]

_WATCH_INTERVAL_S = 0.5
# The file the litkit command is loading, while it loads it (``loading_for_command``).
_command_target: str | None = None


@contextlib.contextmanager
def loading_for_command(path: str) -> Iterator[None]:
    """While the ``litkit`` command runs the body of ``path``, a ``run()`` there serves nothing.

    A script's ``litkit.run(Api(), port=8000)`` at module level, with no main guard, would block the
    load and serve with the script's options; the command serves the class it was given, with its
    own flags, once the file has loaded.
    """
    global _command_target
    previous, _command_target = _command_target, path
    try:
        yield
    finally:
        _command_target = previous


def run(api: LitAPI | Mapping[str, LitAPI | Endpoint], **options: Any) -> None:
    """Serve ``api`` and block until Ctrl+C (or SIGTERM); then stop cleanly. Takes ``serve()``'s options.

    Called from the body of a file that ``litkit serve FILE:Name`` is loading, it returns at once
    and says so: the command serves ``Name`` itself, with its own flags.

    Raises:
        ValueError: ``backend`` is not ``"local"``: from a script, serve on Ray with
            ``litkit serve --backend ray file.py:Class``, or ``serve(backend="ray")`` then ``wait()``.
    """
    if options.get("backend", "local") != "local":
        raise ValueError(
            f"litkit.run() serves with the local backend, not backend={options['backend']!r}; for Ray use "
            "`litkit serve --backend ray file.py:Class`, or server = litkit.serve(api, backend='ray') then server.wait()"
        )
    if _command_target is not None:
        print(
            f"litkit: {_command_target} called litkit.run() while `litkit serve` loaded it; that call serves "
            "nothing: the command serves the class it was given, with its own flags (put the call under "
            '`if __name__ == "__main__":` to keep both ways without this line)',
            file=sys.stderr,
            flush=True,
        )
        return
    server = serve_for_a_terminal(api, **options)
    key = f"\nlitkit: api key:  {server.api_key}   (send it as 'Authorization: Bearer KEY')" if server.api_key else ""
    block_until_interrupted(server, banner(server, "Ctrl+C to stop") + key)


def serve_for_a_terminal(api: LitAPI | Mapping[str, LitAPI | Endpoint], **options: Any) -> Server:
    """``serve()`` on a thread of this process, for ``run()`` and the ``litkit`` command: nothing
    else runs in the process while it serves, so there is no cell to keep the server's GIL apart
    from, and no reason for a sub-interpreter or a server process of its own."""
    with in_this_interpreter("a terminal's process runs nothing else while it serves"):
        return serve(api, **options)


def banner(server: Server, note: str | None = None) -> str:
    """One ``litkit: serving API at URL (kind)`` line per endpoint."""
    lines = []
    for path in server.paths:
        info = server.endpoint_info(path)
        kind = "OpenAI chat" if info["spec"] == "openai-chat" else "streaming" if info["stream"] else "JSON"
        lines.append(f"litkit: serving {info['api']} at {server.url}{path} ({note or kind})")
    return "\n".join(lines)


def block_until_interrupted(server: Server, announcement: str, watch: Callable[[Server], Server] | None = None) -> None:
    """Print ``announcement``, wait for Ctrl+C or SIGTERM, then stop ``server``.

    ``watch``, if given, is called about twice a second with the current server and returns the
    server to keep (e.g. a new one after a reload); the one current at the end is stopped.
    """
    restore = _raise_keyboard_interrupt_on_sigterm()
    _echo_worker_output(server)
    try:
        print(announcement, flush=True)
        if watch is None:
            server.wait()
        while watch is not None:
            time.sleep(_WATCH_INTERVAL_S)
            current, server = server, watch(server)
            if server is not current:
                _echo_worker_output(server)
    except KeyboardInterrupt:
        pass
    finally:
        restore()
        server.stop()
        print("litkit: stopped", flush=True)


def _echo_worker_output(server: Server) -> None:
    """A script or the litkit command owns its terminal: what the workers print shows there, as is."""
    server._listen_to_workers(_print_line)


def _print_line(worker_id: int, stream: str, line: str) -> None:
    if stream in ("stdout", "stderr"):
        print(line, file=sys.stdout if stream == "stdout" else sys.stderr, flush=True)


def _raise_keyboard_interrupt_on_sigterm() -> Callable[[], None]:
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore
