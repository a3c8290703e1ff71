"""``litkit.server.listening``: the listening sockets a server accepts on."""

from __future__ import annotations

import select
import socket
import time

from litkit.server.listening import listen



def _system_maximum() -> int:
    with open("/proc/sys/net/core/somaxconn") as file:
        return int(file.read())


# Past 128 (the old backlog), within what the kernel allows (4096 by default since Linux 5.4).
BURST = min(300, _system_maximum() + 1)


def test_a_burst_of_connects_past_128_is_queued_without_a_retry():
    """Regression (issue 14, weak spot): the listen backlog was 128 while the kernel allows 4096, so
    in a burst of more than 128 simultaneous connects the SYNs past it were dropped and each of those
    clients waited 1 s for its retry. Nothing accepts here: every connect must complete from the
    kernel's queue at once."""
    sockets, port = listen("127.0.0.1", 0)
    clients: list[socket.socket] = []
    try:
        for _ in range(BURST):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            clients.append(client)
        pending = set(clients)
        deadline = time.monotonic() + 0.5  # a dropped SYN is retried after 1 s
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], list(pending), [], max(0.0, deadline - time.monotonic()))
            pending -= set(writable)
        connected = [c for c in clients if c not in pending and c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
        assert len(connected) == BURST, f"{BURST - len(connected)} of {BURST} connects waited for a retry"
    finally:
        for client in clients:
            client.close()
        for sock in sockets:
            sock.close()
