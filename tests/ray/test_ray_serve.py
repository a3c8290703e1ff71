"""litkit on a real local Ray Serve (litkit.ray): the same LitAPI classes, the same HTTP contract.

One Ray session for the whole module (Ray's start-up is slow and heavy on 2 cores): started by the
``ray_serve`` fixture with ``ray.init(num_cpus=2, include_dashboard=False)``, every deployment at a
fraction of a CPU so that several fit, every application deleted after its test, Ray shut down
at the end. Marked ``ray``: the main run leaves it out, CI runs it as a step of its own.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Iterator

import pytest

ray = pytest.importorskip("ray", reason="needs the Ray extra: pip install 'litkit[ray]'") if not os.environ.get("LITKIT_REQUIRE_RAY") else __import__("ray")

import apis  # noqa: E402
import litkit  # noqa: E402
from conftest import ChunkReader, Events, assert_no_children, raw_post, wait_until  # noqa: E402

# Ray's own modules warn about their use of deprecated APIs (pydantic's, for one): not ours to fix.
pytestmark = [pytest.mark.ray, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")]

FRACTION = {"num_cpus": 0.1}


@pytest.fixture(scope="module")
def ray_serve() -> Iterator[str]:
    """A local Ray with Serve's proxy on a free port; yields the proxy's base URL."""
    from ray import serve

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
    ray.shutdown()
    assert_no_children(deadline_s=30)


@pytest.fixture
def deploy(ray_serve: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``deploy(api, **ray_app_options)``: run it as its own application under its own route prefix;
    returns the application's base URL. Every application is deleted after the test."""
    from ray import serve

    names: list[str] = []

    def run(api: litkit.LitAPI, **options: Any) -> str:
        options.setdefault("ray_actor_options", FRACTION)
        name = f"t{len(names)}-{request.node.name}".replace("[", "-").replace("]", "").lower()[:40]
        serve.run(litkit.ray_app(api, **options), name=name, route_prefix=f"/{name}")
        names.append(name)
        return f"{ray_serve}/{name}"

    yield run
    for name in names:
        serve.delete(name)


def post(app_url: str, body: bytes, headers: dict[str, str] | None = None, path: str = "/predict") -> socket.socket:
    """``conftest.raw_post`` to ``path`` of the application at ``app_url`` (its route prefix included)."""
    base, _, prefix = app_url.removeprefix("http://").partition("/")
    return raw_post("http://" + base, body, headers, path=f"/{prefix}{path}")


def test_json_answers_and_the_error_mapping(deploy):
    url = deploy(apis.Echo())
    client = litkit.Client(url)
    assert client.predict({"x": 1}) == {"echo": {"x": 1}}
    with pytest.raises(litkit.HTTPError) as error:
        client.predict({"raise": "http"})
    assert (error.value.status, error.value.message) == (422, "input must be a list")
    with pytest.raises(litkit.HTTPError) as error:
        client.predict({"raise": "value"})
    assert (error.value.status, error.value.message) == (500, "ValueError: bad value 42")


def test_a_stream_and_a_hang_up(deploy, events):
    url = deploy(apis.Ticker(events.path))
    sock = post(url, b'{"interval": 0.001}')
    reader = ChunkReader(sock)
    assert reader.status == 200
    assert [json.loads(reader.line()) for _ in range(3)] == [{"i": 0}, {"i": 1}, {"i": 2}]
    reader.close()
    sock.close()
    left = time.monotonic()
    events.wait_for("finally")
    yields = [e for e in events.named("yield") if e["t"] > left]
    finally_at = events.named("finally")[0]["t"]
    print("after hang-up:", len(yields), "finally ms", (finally_at - left) * 1000)
    assert len(yields) <= 1
    assert finally_at - left < 0.1
