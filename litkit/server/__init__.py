"""The HTTP server: ``serve()`` and ``Server``, on a Tornado loop of its own, beside the caller.

``launch`` (``serve``), ``server`` (``Server``), ``placement`` (where a server runs),
``loop`` (``ServerLoop``: Tornado and the pools on a loop of their own), ``host`` (where that loop
runs: the ``Host`` protocol, and a sub-interpreter with its own GIL on Python 3.13+, else a process
of its own, or a thread when asked), ``host_caller`` and ``host_server`` (the caller's and the
server's ends of the host socket), ``host_boundary`` (what crosses it: the recipe, the named calls
and events), ``interpreters`` (sub-interpreters, by Python version),
``switching`` (the GIL switch interval while a server on a thread shares the caller's GIL), ``planning``
(``Endpoint``, and ``serve()``'s arguments checked into each endpoint's plan; the options themselves
are ``litkit.options``), ``endpoints`` (each endpoint's state), ``relay`` (one call to an endpoint, on Tornado's HTTP
connection), ``routing`` and ``handlers`` (health,
info, metrics, 404), ``page`` (the page at ``/`` that calls the endpoints, and ``/openapi.json``,
from ``openapi`` and ``requests_doc``), ``controls`` (the dashboard's Cancel and Stop over HTTP, with their secret),
``access`` (API key, Origin and Host checks), ``metrics``, ``listening``
(binding the sockets), ``registry`` (this process's servers by port and cell), ``terminal``
(``run()`` and the Ctrl+C loop), ``links`` (proxy-aware URLs) and ``jupyter_route`` (registering
with litkit's Jupyter route); ``litkit.kernel`` says whether this is a Jupyter kernel and which
cell runs. Knows nothing of widgets: ``litkit.notebook`` is loaded only when a
dashboard is asked for.
"""

from .launch import serve
from .planning import Endpoint
from .server import Server
from .terminal import run

__all__ = ["Endpoint", "Server", "run", "serve"]
