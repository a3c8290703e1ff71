"""This process's servers, registered with litkit's Jupyter route when the kernel runs under a
Jupyter server with litkit's extension (``litkit.jupyter``; the file format is
``litkit.wire.registration``), so that a browser reaches them at ``<base_url>litkit/<port>/``.

Standard library only. Outside such a kernel every function here does nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Mapping

from ..wire.registration import Registration, read_registration, remove_registration, route_and_registry, write_registration

__all__ = ["announce", "route_url", "withdraw"]

logger = logging.getLogger("litkit.server")


def announce(port: int, url: str, environ: Mapping[str, str] | None = None, max_body_sizes: Mapping[str, int] | None = None) -> bool:
    """Register the server on ``port`` (base URL ``url``, ``{endpoint path: max_body_size}``) with
    the Jupyter route; whether it was."""
    found = route_and_registry(os.environ if environ is None else environ)
    if found is None:
        return False
    try:
        write_registration(found[1], Registration(port, os.getpid(), url, tuple(sorted((max_body_sizes or {}).items()))))
    except OSError as error:
        logger.warning(
            "could not register port %d with litkit's Jupyter route in %s (%s); the dashboard links to "
            "jupyter-server-proxy's route instead", port, found[1], error,
        )
        return False
    return True


def withdraw(port: int, environ: Mapping[str, str] | None = None) -> None:
    """Remove this process's registration of ``port``, if it made one."""
    found = route_and_registry(os.environ if environ is None else environ)
    if found is not None:
        remove_registration(found[1], port, os.getpid())


def route_url(port: int, environ: Mapping[str, str] | None = None) -> str | None:
    """``<route>/<port>`` when this process registered ``port`` with the Jupyter route, else None."""
    found = route_and_registry(os.environ if environ is None else environ)
    if found is None:
        return None
    registration = read_registration(found[1], port)
    if registration is None or registration.pid != os.getpid():
        return None
    return f"{found[0]}/{port}"
