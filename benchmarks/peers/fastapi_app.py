"""FastAPI on uvicorn (pinned in ``benchmarks/venvs.py``) serving the benchmark workloads.

    benchmarks/.venvs/fastapi/bin/python benchmarks/peers/fastapi_app.py --port 8000 --app echo

Written as a FastAPI user would: a plain ``def`` endpoint taking a dict for ``echo`` and ``work``
(FastAPI runs it in its thread pool, so requests run side by side: nothing queues), a ``StreamingResponse`` over a plain generator for ``tokens``. uvicorn runs
with its standard extras (uvloop, httptools), access log off; ``--workers N`` uses uvicorn's own
multi-process mode.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.responses import StreamingResponse  # noqa: E402

import common  # noqa: E402

app = FastAPI()


@app.post("/predict")
def predict(request: dict):
    app_name = os.environ.get("BENCH_APP", "echo")
    if app_name == "echo":
        return {"output": request["input"]}
    if app_name == "work":
        return common.work(request)
    return StreamingResponse(
        (json.dumps({"output": token}) + "\n" for token in common.tokens(request)), media_type="application/x-ndjson"
    )


def main() -> None:
    arguments = common.parse_arguments(__doc__.splitlines()[0])
    os.environ["BENCH_APP"] = arguments.app  # read again by uvicorn's worker processes
    uvicorn.run(
        "fastapi_app:app", host="127.0.0.1", port=arguments.port, workers=arguments.workers, log_level="warning", access_log=False,
        app_dir=os.path.dirname(os.path.abspath(__file__)),
    )


if __name__ == "__main__":
    main()
