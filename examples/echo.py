"""Echo: the smallest litkit API. It answers ``{"input": X}`` with ``{"output": X}``.

Run it as a script; it serves until Ctrl+C::

    python examples/echo.py             # http://127.0.0.1:8000/predict
    python examples/echo.py --port 0    # any free port: the first line printed says which

Call it from another terminal::

    $ curl -X POST http://127.0.0.1:8000/predict -H 'Content-Type: application/json' -d '{"input": "hello"}'
    {"output":"hello"}

A body without an ``"input"`` field is refused with 422 and a message saying what to send.

The class is defined in this script, so it lives in ``__main__``; litkit sends it to its worker
process with cloudpickle, and the worker never runs this file, so it would even work without the
``if __name__ == "__main__":`` guard below (keep the guard anyway: it lets other code import
``EchoAPI`` without starting a server).
"""

from __future__ import annotations

import argparse
from typing import Any

import litkit


class EchoAPI(litkit.LitAPI):
    """Sends back whatever JSON value arrives under ``"input"``."""

    def decode_request(self, request: Any) -> Any:
        # Runs in the worker on the parsed JSON body. Raising HTTPError answers with that status.
        if not isinstance(request, dict) or "input" not in request:
            raise litkit.HTTPError(422, 'send a JSON object with an "input" field, e.g. {"input": "hello"}')
        return request["input"]

    def predict(self, x: Any) -> Any:
        # A real API would run its model here (loaded once per worker in setup()).
        return x

    def encode_response(self, output: Any) -> dict[str, Any]:
        # Whatever this returns is sent as the JSON body.
        return {"output": output}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve an API that echoes {'input': X} back as {'output': X}.")
    parser.add_argument("--port", type=int, default=8000, help="TCP port, 0 for any free one (default: 8000)")
    args = parser.parse_args(argv)
    # Blocks: prints "litkit: serving EchoAPI at <url>/predict ...", then serves until Ctrl+C or SIGTERM.
    litkit.run(EchoAPI(), port=args.port)


if __name__ == "__main__":
    main()
