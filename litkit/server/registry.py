"""The servers running in this process, by port: a new ``serve()`` on a port replaces the server
there, re-running a notebook cell replaces the servers its earlier run started (its first
``serve()`` call the earlier run's first server, and so on), and every server still running at
exit is stopped."""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any, Protocol

from . import jupyter_route

__all__ = ["RunningServer", "register", "server_to_replace", "stop_all", "stop_servers_of_earlier_runs", "unregister"]

logger = logging.getLogger("litkit.server")

Cell = tuple[str, str]  # (cell id, execution id) of the notebook cell that started a server


class RunningServer(Protocol):
    """What the registry needs of a server (``litkit.server.Server``)."""

    @property
    def port(self) -> int: ...

    @property
    def url(self) -> str: ...

    @property
    def paths(self) -> list[str]: ...

    def endpoint_info(self, path: str | None = None) -> dict[str, Any]: ...

    def stop(self) -> None: ...

    def _shutdown(self, final_state: str, timeout: float) -> None: ...


_registry_lock = threading.Lock()
_servers_by_port: dict[int, RunningServer] = {}
# port -> the cell that started the server there (none outside Jupyter), and which of that run's
# serve() calls it was (0: the first)
_cells: dict[int, tuple[Cell, int]] = {}
_atexit_registered = False


def server_to_replace(cell: Cell | None, port: int) -> RunningServer | None:
    """The server that a ``serve()`` on ``port`` from ``cell`` replaces: the one of this process on
    that port; else, with ``port=0``, the one that this cell's earlier run started with its
    serve() call of the same rank (this run's first call: the earlier run's first server)."""
    with _registry_lock:
        if port:
            return _servers_by_port.get(port)
        if cell is None:
            return None
        rank = _calls_so_far(cell)
        for served, (earlier, earlier_rank) in _cells.items():
            if earlier[0] == cell[0] and earlier[1] != cell[1] and earlier_rank == rank:
                return _servers_by_port.get(served)
    return None


def stop_servers_of_earlier_runs(cell: Cell | None, keep: RunningServer | None = None) -> None:
    """Re-running a notebook cell replaces the servers its earlier runs started (not those of this
    run, nor ``keep``, which this call replaces in place): a serve() call stops those of a rank
    below or equal to its own, and leaves those of a higher rank to the calls after it."""
    if cell is None:
        return
    with _registry_lock:
        rank = _calls_so_far(cell)
        earlier = [
            server
            for port, server in _servers_by_port.items()
            if port in _cells and _cells[port][0][0] == cell[0] and _cells[port][0][1] != cell[1] and _cells[port][1] <= rank and server is not keep
        ]
    for old in earlier:
        logger.info("this cell started %s in an earlier run; stopping it first", old.url)
        old._shutdown("replaced", 10.0)


def _calls_so_far(cell: Cell) -> int:
    """How many servers this run of ``cell`` has registered (the rank of its next serve() call)."""
    return sum(1 for earlier, _ in _cells.values() if earlier == cell)


def register(server: RunningServer, cell: Cell | None) -> None:
    """Note a started server under its port, with the notebook cell that started it (None outside
    Jupyter), and register it with litkit's Jupyter route where there is one; the first one also
    arranges ``stop_all()`` at exit. A server that took over its port from an earlier one (a
    re-run) takes that one's place."""
    global _atexit_registered
    with _registry_lock:
        _servers_by_port[server.port] = server
        _cells.pop(server.port, None)
        if cell is not None:
            _cells[server.port] = (cell, _calls_so_far(cell))
        if not _atexit_registered:
            atexit.register(stop_all)
            _atexit_registered = True
    jupyter_route.announce(server.port, server.url, max_body_sizes={path: server.endpoint_info(path)["max_body_size"] for path in server.paths})


def unregister(server: RunningServer) -> None:
    """Forget a stopped server (unless another has taken its port since), and its Jupyter route."""
    with _registry_lock:
        if _servers_by_port.get(server.port) is not server:
            return
        del _servers_by_port[server.port]
        _cells.pop(server.port, None)
    jupyter_route.withdraw(server.port)


def stop_all() -> None:
    """Stop every server of this process (at exit)."""
    with _registry_lock:
        servers = list(_servers_by_port.values())
    for server in servers:
        server.stop()
