"""Which ports litkit's Jupyter route relays to: those that a litkit server started by one of this
Jupyter server's kernels registered (``litkit.wire.registration``), and no other.

A port is relayed to while all of these hold, checked on every request:

1. ``<registry>/<port>.json`` exists (the server writes it on start and removes it on stop);
2. the process it names is alive and is one of this Jupyter server's kernels, or a descendant of
   one (a kernel started through a wrapper such as ``conda run``);
3. on Linux, that process holds a listening TCP socket on the port (``/proc``), so a stale file
   left by a server that died can never send a browser to whatever took the port since.

Checks 1 and 2 run on every request (about 0.1 ms). Check 3 reads ``/proc/net/tcp``, which takes
the kernel about 13 ms on a machine with a few hundred sockets, so it runs when a registration is
first seen and again once it is ``RECHECK_S`` old, in a thread (other streams keep flowing); a
removed file, or a kernel that ended, stops the relay at once. Where there is no ``/proc``, check
2 asks that the process be a kernel itself and check 3 is skipped.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse
from typing import Any, Iterable

from ..wire.registration import Registration, read_registration

__all__ = ["KernelPorts", "RouteRefused"]

RECHECK_S = 30.0
PROC = "/proc"
MAX_ANCESTORS = 64


class RouteRefused(Exception):
    """The route will not relay to a port: ``status`` (404 or 403) and a message that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


class KernelPorts:
    """The ports this Jupyter server's kernels registered in ``folder``.

    Args:
        kernel_manager: the Jupyter server's ``MultiKernelManager`` (its kernels' pids are read
            from their provisioners).
        folder: the registry folder (made by ``litkit.jupyter.extension``).
    """

    def __init__(self, kernel_manager: Any, folder: str) -> None:
        self._kernel_manager = kernel_manager
        self.folder = folder
        self._listening: dict[Registration, float] = {}  # registration -> when check 3 last passed

    async def target(self, port: int) -> tuple[str, Registration]:
        """The host to connect to for ``port``, and the server's registration.

        Raises:
            RouteRefused: no litkit server of this Jupyter server's kernels registered the port.
        """
        registration = read_registration(self.folder, port)
        if registration is None:
            raise RouteRefused(
                404,
                f"no litkit server of this Jupyter server's kernels serves port {port}: start one with "
                "litkit.serve() in a notebook of this Jupyter server (server.public_url gives its address)",
            )
        host = _loopback_host(registration)
        if not _is_kernel_or_descendant(registration.pid, set(self._kernel_pids())):
            raise RouteRefused(
                403,
                f"port {port} was registered by process {registration.pid}, which is not a running kernel "
                "of this Jupyter server (or a process of one); litkit's route relays only to servers that "
                "this Jupyter server's kernels started",
            )
        now = time.monotonic()
        if os.path.isdir(PROC) and now - self._listening.get(registration, -RECHECK_S) >= RECHECK_S:
            listens = await asyncio.get_running_loop().run_in_executor(None, _listens_on, registration.pid, port)
            if not listens:
                self._listening.pop(registration, None)
                raise RouteRefused(
                    404,
                    f"process {registration.pid} registered port {port} but does not listen on it; its "
                    "litkit server has stopped: run serve() again",
                )
            self._listening = {r: t for r, t in self._listening.items() if now - t < RECHECK_S and r.port != port}
            self._listening[registration] = now
        return host, registration

    def _kernel_pids(self) -> Iterable[int]:
        manager = self._kernel_manager
        for kernel_id in list(manager.list_kernel_ids()):
            try:
                kernel = manager.get_kernel(kernel_id)
            except KeyError:
                continue  # shut down in the meantime
            pid = getattr(getattr(kernel, "provisioner", None), "pid", None)
            if isinstance(pid, int):
                yield pid


def _loopback_host(registration: Registration) -> str:
    """The host of the registration's URL, which must be ``http://<loopback>:<its port>``."""
    parts = urllib.parse.urlsplit(registration.url)
    if parts.scheme != "http" or parts.port != registration.port or parts.hostname not in ("127.0.0.1", "::1", "localhost"):
        raise RouteRefused(
            403,
            f"port {registration.port} was registered with the URL {registration.url!r}; litkit's route relays "
            "only to http://127.0.0.1:<port> or http://[::1]:<port> (serve with the default host='127.0.0.1')",
        )
    return parts.hostname


def _parent_pid(pid: int) -> int | None:
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[1])  # after "pid (name) state": the parent's pid


def _is_kernel_or_descendant(pid: int, kernels: set[int]) -> bool:
    if not _is_alive(pid):
        return False
    if pid in kernels:
        return True
    if not os.path.isdir(PROC):
        return False
    for _ in range(MAX_ANCESTORS):
        parent = _parent_pid(pid)
        if parent is None or parent <= 1:
            return False
        if parent in kernels:
            return True
        pid = parent
    return False


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's (and so never one of our kernels; the kernel check says so)
    return True


def _listening_inodes(port: int) -> set[str]:
    """The inodes of TCP sockets listening on ``port`` (IPv4 and IPv6) in this network namespace."""
    wanted = f":{port:04X}"
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            with open(f"{PROC}/net/{table}") as file:
                next(file, None)  # the header
                for line in file:
                    fields = line.split()
                    if len(fields) > 9 and fields[1].endswith(wanted) and fields[3] == "0A":  # 0A: LISTEN
                        inodes.add(fields[9])
        except OSError:
            continue
    return inodes


def _listens_on(pid: int, port: int) -> bool:
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return False
    try:
        descriptors = os.listdir(f"{PROC}/{pid}/fd")
    except OSError:
        return False
    for descriptor in descriptors:
        try:
            if os.readlink(f"{PROC}/{pid}/fd/{descriptor}") in inodes:
                return True
        except OSError:
            continue
    return False
