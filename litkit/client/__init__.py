"""Clients of a litkit server: ``Client`` (blocking, for a cell or a script) and ``AsyncClient``
(for asyncio code). Stdlib only; they speak plain HTTP, so they work against any litkit server.
"""

from .async_client import AsyncClient
from .client import Client

__all__ = ["AsyncClient", "Client"]
