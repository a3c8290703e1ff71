"""Loading litkit's Jupyter server extension: the registry folder, the environment that the
Jupyter server's kernels inherit (``litkit.wire.registration``), and the route's handler."""

from __future__ import annotations

import atexit
import os
import shutil
from typing import Any

from jupyter_server.utils import url_path_join

from ..wire.registration import REGISTRY_ENV, ROUTE_ENV, make_registry_folder
from .owners import KernelPorts
from .relay import RelayHandler

__all__ = ["load"]


def load(serverapp: Any) -> None:
    """Add ``<base_url>litkit/<port>/<path>`` to ``serverapp`` and tell its future kernels about it."""
    folder = make_registry_folder(os.path.join(serverapp.runtime_dir, f"litkit-routes-{os.getpid()}"))
    atexit.register(shutil.rmtree, folder, True)
    route = url_path_join(serverapp.base_url, "litkit")
    # Kernels start with a copy of this process's environment (jupyter_client's LocalProvisioner),
    # so each learns where to register and how browsers reach the route.
    os.environ[ROUTE_ENV] = route
    os.environ[REGISTRY_ENV] = folder
    serverapp.web_app.add_handlers(
        ".*$", [(url_path_join(route, r"(\d+)(/.*)?"), RelayHandler, {"ports": KernelPorts(serverapp.kernel_manager, folder)})]
    )
    serverapp.log.info("litkit: relaying %s<port>/ to the litkit servers of this Jupyter server's kernels", route + "/")

