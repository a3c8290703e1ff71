"""The listening sockets of a server, bound in the caller's thread so a taken port fails at once."""

from __future__ import annotations

import errno
import socket

from ..errors import PortInUseError

__all__ = ["listen"]

_SOMAXCONN = "/proc/sys/net/core/somaxconn"


def _backlog() -> int:
    """The most connections the kernel queues for a listening socket: past the backlog, a burst's
    extra SYNs are dropped and each of those clients waits a second for its retry."""
    try:
        with open(_SOMAXCONN) as file:
            return max(int(file.read().strip()), socket.SOMAXCONN)
    except (OSError, ValueError):
        return socket.SOMAXCONN


def listen(host: str, port: int) -> tuple[list[socket.socket], int]:
    """Listening sockets for every address ``host`` resolves to, all on one port (``0``: a free
    one), and that port.

    Our own loop rather than ``tornado.netutil.bind_sockets``, which leaves the failed socket
    unclosed when the port is taken.

    Raises:
        ValueError: ``host`` does not resolve to an address.
        PortInUseError: another process holds the port.
        PermissionError: the port needs privileges.
    """
    try:
        addresses = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise ValueError(f"host {host!r} is not an address this machine can listen on ({error})") from error
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # every address on the port the first one got
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.setblocking(False)
            sock.listen(_backlog())
    except OSError as error:
        for sock in sockets:
            sock.close()
        if error.errno == errno.EADDRINUSE:
            raise PortInUseError(host, port) from error
        if error.errno == errno.EACCES:
            raise PermissionError(f"not allowed to listen on port {port}; ports below 1024 need privileges, use a higher port or port=0") from error
        raise
    return sockets, sockets[0].getsockname()[1]
