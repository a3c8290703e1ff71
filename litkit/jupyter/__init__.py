"""litkit's Jupyter server extension: the route ``<base_url>litkit/<port>/<path>`` on the Jupyter
server, which relays a browser's requests to a litkit server that one of that Jupyter server's
kernels started, streaming as they come and hanging up when the browser does.

Runs in the Jupyter server's process, never in a kernel or a worker, and ``import litkit`` never
loads it: ``extension`` (loading: the registry folder, the environment kernels inherit, the
handler), ``owners`` (which ports may be relayed to: a registration by one of this server's
kernels) and ``relay`` (the handler). Enabled by jupyter_server's extension discovery
(``jupyter-config/jupyter_server_config.d/litkit.json``, installed with litkit); needs
``pip install 'litkit[jupyter]'``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "litkit.jupyter"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from .extension import load

    load(serverapp)
