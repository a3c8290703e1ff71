"""A raw Tornado handler serving the benchmark workloads in one process: the ceiling.

    python benchmarks/peers/tornado_app.py --port 8000 --app echo [--workers 2]

The model runs on the event loop itself (no worker process, no queue), so this is what an HTTP
layer costs with nothing between it and the model. ``tokens`` writes and flushes one NDJSON line
per token; a failed flush (the client left) closes the generator. ``--workers N`` forks N
processes sharing the socket (Tornado's ``fork_processes``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tornado.httpserver  # noqa: E402
import tornado.iostream  # noqa: E402
import tornado.netutil  # noqa: E402
import tornado.process  # noqa: E402
import tornado.web  # noqa: E402

import common  # noqa: E402


class EchoHandler(tornado.web.RequestHandler):
    def post(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps({"output": json.loads(self.request.body)["input"]}))


class WorkHandler(tornado.web.RequestHandler):
    def post(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(common.work(json.loads(self.request.body))))


class TokensHandler(tornado.web.RequestHandler):
    async def post(self) -> None:
        self.set_header("Content-Type", "application/x-ndjson")
        generator = common.tokens(json.loads(self.request.body))
        try:
            for token in generator:
                self.write(json.dumps({"output": token}) + "\n")
                await self.flush()
        except tornado.iostream.StreamClosedError:
            pass
        finally:
            generator.close()


def main() -> None:
    arguments = common.parse_arguments(__doc__.splitlines()[0])
    sockets = tornado.netutil.bind_sockets(arguments.port, "127.0.0.1")
    if arguments.workers > 1:
        tornado.process.fork_processes(arguments.workers, max_restarts=0)

    async def serve() -> None:
        handler = {"echo": EchoHandler, "tokens": TokensHandler, "work": WorkHandler}[arguments.app]
        server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/predict", handler)]))
        server.add_sockets(sockets)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
