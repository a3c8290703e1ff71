"""LitServe (pinned in ``benchmarks/venvs.py``) serving the benchmark workloads.

    benchmarks/.venvs/litserve/bin/python benchmarks/peers/litserve_app.py --port 8000 --app echo

Configured as its documentation suggests for one CPU model: ``accelerator="cpu"``,
``workers_per_device`` workers, one API server process, no request timeout (a 10,000-token stream
must not be cut), logs at warning level, no generated client file.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import litserve as ls  # noqa: E402

import common  # noqa: E402


class Echo(ls.LitAPI):
    def setup(self, device):
        pass

    def decode_request(self, request):
        return request["input"]

    def predict(self, x):
        return x

    def encode_response(self, output):
        return {"output": output}


class Tokens(ls.LitAPI):
    def setup(self, device):
        pass

    def decode_request(self, request):
        return request

    def predict(self, x):
        yield from common.tokens(x)

    def encode_response(self, output):
        for token in output:
            yield {"output": token}


class Work(ls.LitAPI):
    def setup(self, device):
        pass

    def decode_request(self, request):
        return request

    def predict(self, x):
        return common.work(x)

    def encode_response(self, output):
        return output


def main() -> None:
    arguments = common.parse_arguments(__doc__.splitlines()[0])
    api = {"echo": Echo, "tokens": lambda: Tokens(stream=True), "work": Work}[arguments.app]()
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=arguments.workers, timeout=False)
    server.run(host="127.0.0.1", port=arguments.port, num_api_servers=1, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
