"""The contract of a LitAPI, in one place for every backend: how a request's hooks are called and
what its answer looks like on HTTP.

* ``hooks``: one hook call (``context`` for the hooks that declare it, ``decode_request``'s pydantic
  model, a spec's default input), sync or async, and closing generators.
* ``answer``: one request's run, from its body to the frames to send (a result, chunks then the end,
  or an error with its status), through sync hooks (``answer``) or async ones (``answer_async``).
* ``batching``: ``batch``, one ``predict``, ``unbatch``, and a batched stream split per request.
* ``framing``: a chunk as an NDJSON line or an SSE event, an error body, a stream's final error.

The worker's sync, batched and async loops (``litkit.worker``) and a Ray Serve replica
(``litkit.ray.replica``) call it; the in-process server (``litkit.server.relay``) frames with it.
Standard library only: it runs in worker processes and replicas, below the server and Ray.
"""
