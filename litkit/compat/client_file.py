"""The ``client.py`` that ``LitServer.run(generate_client_file=True)`` writes, as LitServe's does:
a script that sends one request to the server, for the user to edit."""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["write_client_file"]

logger = logging.getLogger("litkit.compat")

_TEMPLATE = '''"""A client for the server that LitServer.run() started (written by litkit; edit it freely)."""

import json
import urllib.request

URL = "{url}"

request = urllib.request.Request(
    URL,
    data=json.dumps({{"input": 4.0}}).encode(),
    headers={{"Content-Type": "application/json"}},
    method="POST",
)
with urllib.request.urlopen(request) as response:
    print(f"Status: {{response.status}}\\nResponse:\\n {{response.read().decode()}}")
'''


def write_client_file(server: Any, directory: str | None = None) -> str | None:
    """Write ``client.py`` in ``directory`` (the working directory) unless one is there; return its path."""
    path = os.path.join(directory or os.getcwd(), "client.py")
    if os.path.exists(path):
        logger.debug("client.py exists in %s; not writing it", os.path.dirname(path))
        return None
    with open(path, "w") as file:
        file.write(_TEMPLATE.format(url=server.url + server.api_path))
    return path
