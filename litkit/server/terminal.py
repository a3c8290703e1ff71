"""Serving from a terminal: ``litkit.run()`` and the ``litkit`` command block until Ctrl+C (or
SIGTERM), show what the workers print, then stop cleanly."""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, Callable, Mapping

from ..api import LitAPI
from .endpoints import Endpoint
from .server import Server, serve

__all__ = ["banner", "block_until_interrupted", "run"]

_WATCH_INTERVAL_S = 0.5


def run(api: LitAPI | Mapping[str, LitAPI | Endpoint], **options: Any) -> None:
    """Serve ``api`` and block until Ctrl+C (or SIGTERM); then stop cleanly. Takes ``serve()``'s options.

    Raises:
        ValueError: ``backend`` is not ``"local"``: from a script, serve on Ray with
            ``litkit serve --backend ray file.py:Class``, or ``serve(backend="ray")`` then ``wait()``.
    """
    if options.get("backend", "local") != "local":
        raise ValueError(
            f"litkit.run() serves with the local backend, not backend={options['backend']!r}; for Ray use "
            "`litkit serve --backend ray file.py:Class`, or server = litkit.serve(api, backend='ray') then server.wait()"
        )
    server = serve(api, **options)
    key = f"\nlitkit: api key:  {server.api_key}   (send it as 'Authorization: Bearer KEY')" if server.api_key else ""
    block_until_interrupted(server, banner(server, "Ctrl+C to stop") + key)


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
    for endpoint in server._serving.endpoints:
        endpoint.pool.log.listeners.append(_print_line)


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
