"""The worker process: ``python -m litkit.worker``, a fresh interpreter that runs the user's API.

``main`` is its loop (handshake, one request at a time, cancellation by a broken pipe), ``batch``
runs a group of requests through ``batch``/``predict``/``unbatch``, ``async_loop`` serves an
``async def predict``, and ``timeslice`` sets the scheduler slice of a streaming worker (and of the
server thread). The hooks themselves are called through ``litkit.contract``, as a Ray Serve replica
calls them. Imports only the stdlib, cloudpickle and the folders below it (``contract``, ``wire``,
``specs``, the shared modules at the package's top): never tornado, ipywidgets or the server side.
"""
