"""The serving process's side of its workers: starting, feeding and replacing them.

``pool`` (``WorkerPool``: handshake, dispatch, restart, stop), ``batching`` (which queued jobs go
to a worker as one group, and when), ``jobs`` (a request on its way through the pool, and the worker
that takes it), ``processes`` (starting, describing and reaping a worker's interpreter),
``channels`` (the server's non-blocking ends of the control socket and the response pipes),
``devices`` (which device each worker gets), ``logs`` (what workers print, and their hooks'
``self.log()`` entries) and ``tracking`` (each request's record and the endpoint's figures). Runs
on the server's event loop with asyncio and the stdlib; it imports neither tornado nor the HTTP
layer above it.
"""
