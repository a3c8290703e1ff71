"""The URL a browser should use for a server, where the notebook's browser cannot reach the
kernel's loopback (JupyterHub, a remote kernel behind a proxy).

Standard library only: ``Server.__repr__`` and the dashboard both use it.
"""

from __future__ import annotations

import os
from typing import Mapping

from .jupyter_route import route_url

__all__ = ["local_url", "public_url"]


def public_url(url: str, port: int, environ: Mapping[str, str] | None = None) -> str:
    """The base URL to show for a server listening at ``url`` on ``port``, without a trailing slash.

    In order:

    - ``LITKIT_PROXY_URL``: a template in which ``{port}`` is replaced by the port, e.g.
      ``https://hub.example.org/user/ada/proxy/{port}``;
    - ``JUPYTERHUB_SERVICE_PREFIX`` (set by JupyterHub in every single-user server): the path of
      litkit's own Jupyter route, ``<base_url>litkit/<port>``, where the Jupyter server runs litkit's
      extension and this server registered with it (``litkit.server.jupyter_route``); else
      jupyter-server-proxy's route, ``<prefix>proxy/<port>``; both relative to the hub's address;
    - else ``url`` itself.
    """
    environ = os.environ if environ is None else environ
    template = environ.get("LITKIT_PROXY_URL", "").strip()
    if template:
        return template.replace("{port}", str(port)).rstrip("/")
    prefix = environ.get("JUPYTERHUB_SERVICE_PREFIX", "").strip()
    if prefix:
        return route_url(port, environ) or "/" + prefix.strip("/") + f"/proxy/{port}"
    return url


def local_url(host: str, port: int) -> str:
    """The base URL of a server listening on ``host``: a wildcard address becomes loopback."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"
