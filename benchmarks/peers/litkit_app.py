"""litkit serving the benchmark workloads (see ``common.py``); prints ``serve()``'s own time.

    python benchmarks/peers/litkit_app.py --port 8000 --app echo --workers 1 [--widget shown]

``--widget shown`` creates the dashboard widget (``server.widget``) and keeps it refreshing, as in
a notebook that displays it; ``hidden`` never creates it. Prints one JSON line
``{"serve_s": ..., "widget": ...}`` once ready, then serves until SIGTERM.
"""

from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cloudpickle  # noqa: E402

import common  # noqa: E402
import litkit  # noqa: E402
from litkit.server.terminal import block_until_interrupted  # noqa: E402

# The workers are fresh interpreters that cannot import this folder: send `common` by value.
cloudpickle.register_pickle_by_value(common)


class Echo(litkit.LitAPI):
    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        return x

    def encode_response(self, output):
        return {"output": output}


class Tokens(litkit.LitAPI):
    def predict(self, x):
        yield from common.tokens(x)

    def encode_response(self, output):
        for token in output:
            yield {"output": token}


class Work(litkit.LitAPI):
    def predict(self, x):
        return common.work(x)


def main() -> None:
    arguments = common.parse_arguments(__doc__.splitlines()[0])
    api = {"echo": Echo, "tokens": Tokens, "work": Work}[arguments.app]()
    started = time.perf_counter()
    server = litkit.serve(api, port=arguments.port, workers=arguments.workers)
    serve_s = time.perf_counter() - started
    widget = "none"
    if arguments.widget != "none":
        widget = "pending (no server.widget)"
        if hasattr(server, "widget") and arguments.widget == "shown":
            shown = server.widget  # noqa: F841  (kept alive: it refreshes itself from status())
            try:
                from IPython.display import display

                display(shown)
            except ImportError:
                pass
            widget = "shown"
        elif hasattr(server, "widget"):
            widget = "hidden"
    block_until_interrupted(server, json.dumps({"serve_s": serve_s, "widget": widget, "pid": os.getpid()}))


if __name__ == "__main__":
    main()
