"""The dashboard's control paths (``litkit.server.controls``): ``/litkit/control/cancel`` and
``/stop`` answer only the per-server control secret, from any page, never the API key."""

from __future__ import annotations

import json

import requests

import apis
from conftest import DEADLINE_S, ChunkReader, raw_post, wait_until

SECRET_HEADER = "X-Litkit-Control"


def _control(server, action: str, body: dict | None = None, headers: dict | None = None) -> requests.Response:
    return requests.post(f"{server.url}/litkit/control/{action}", json=body or {}, headers=headers or {}, timeout=DEADLINE_S)


def _secret(server) -> str:
    return server._control_secret  # what the dashboard's widget model receives


def test_cancel_with_the_secret_cancels_a_live_stream(serve, events):
    server = serve(apis.Ticker(events.path))
    sock = raw_post(server.url, json.dumps({"n": 100_000, "interval": 0.01}).encode())
    reader = ChunkReader(sock)
    reader.line()
    request_id = reader.headers["x-request-id"]
    answer = _control(server, "cancel", {"request_id": request_id}, {SECRET_HEADER: _secret(server)})
    assert answer.status_code == 200 and answer.json() == {"cancelled": True, "request_id": request_id}
    events.wait_for("finally")
    wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="the cancellation to be counted")
    recent = [entry for entry in server.status()["recent"] if entry["id"] == request_id]
    assert "cancelled from the dashboard after" in json.dumps(recent)
    assert _control(server, "cancel", {"request_id": request_id}, {SECRET_HEADER: _secret(server)}).json()["cancelled"] is False
    reader.close()
    sock.close()


def test_the_api_key_alone_does_not_open_the_control_paths(serve):
    server = serve(apis.Echo(), api_key="auto")
    for headers in ({"X-API-Key": server.api_key}, {"Authorization": f"Bearer {server.api_key}"}, {SECRET_HEADER: server.api_key}, {SECRET_HEADER: _secret(server)[:-1] + "x"}, {}):
        for action, body in (("cancel", {"request_id": "r"}), ("stop", {})):
            refused = _control(server, action, body, headers)
            assert refused.status_code == 403, (action, headers)
            assert "takes only the dashboard's control secret" in refused.json()["error"]
    assert server.state == "serving"
    assert requests.post(server.url + "/predict", json={"x": 1}, headers={"X-API-Key": server.api_key}, timeout=DEADLINE_S).status_code == 200


def test_pages_of_any_origin_may_send_the_secret_and_read_the_answer(serve):
    """The notebook's page is another origin than the server's; the secret, never a cookie, is the credential."""
    server = serve(apis.Echo())
    origin = "http://localhost:8888"
    preflight = requests.options(
        f"{server.url}/litkit/control/cancel",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": f"{SECRET_HEADER}, content-type"},
        timeout=DEADLINE_S,
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert SECRET_HEADER in preflight.headers["Access-Control-Allow-Headers"]
    answer = _control(server, "cancel", {"request_id": "none"}, {"Origin": origin, SECRET_HEADER: _secret(server)})
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == origin
    refused = _control(server, "cancel", {"request_id": "none"}, {"Origin": origin})
    assert refused.status_code == 403
    # The endpoints themselves still refuse that origin.
    assert requests.post(server.url + "/predict", json={}, headers={"Origin": origin}, timeout=DEADLINE_S).status_code == 403


def test_a_foreign_host_name_is_refused_as_on_every_path(serve):
    server = serve(apis.Echo())
    answer = _control(server, "stop", {}, {SECRET_HEADER: _secret(server), "Host": "rebound.example.com"})
    assert answer.status_code == 403 and "DNS-rebinding" in answer.json()["error"]
    assert server.state == "serving"


def test_a_malformed_cancel_says_what_to_send(serve):
    server = serve(apis.Echo())
    for body in ({}, {"request_id": 5}, {"request_id": ""}):
        answer = _control(server, "cancel", body, {SECRET_HEADER: _secret(server)})
        assert answer.status_code == 422 and '{"request_id":' in answer.json()["error"]


def test_stop_with_the_secret_stops_the_server(serve):
    server = serve(apis.Echo())
    answer = _control(server, "stop", {}, {SECRET_HEADER: _secret(server)})
    assert answer.status_code == 202 and answer.json() == {"stopping": True}
    wait_until(lambda: server.state == "stopped" and not server._thread.is_alive(), message="the server to stop")
    wait_until(lambda: not [t for t in __import__("threading").enumerate() if t.name.startswith("litkit-stop-")], message="the stopping thread to end")


def test_one_cancel_ends_one_of_the_requests_sharing_a_client_chosen_id(serve, events):
    """Issue 25, weak spot: one cancel ended every request sharing a client-chosen
    ``X-Request-ID``; it ends the oldest, and the next cancel the next."""
    server = serve(apis.Ticker(events.path), workers=2)
    body = json.dumps({"n": 100_000, "interval": 0.01}).encode()
    first = raw_post(server.url, body, {"X-Request-ID": "shared"})
    first_reader = ChunkReader(first)
    first_reader.line()
    second = raw_post(server.url, body, {"X-Request-ID": "shared"})
    second_reader = ChunkReader(second)
    second_reader.line()
    try:
        assert _control(server, "cancel", {"request_id": "shared"}, {SECRET_HEADER: _secret(server)}).json()["cancelled"] is True
        wait_until(lambda: server.status()["counts"]["cancelled"] == 1, message="one request to be counted cancelled")
        assert server.status()["counts"]["running"] == 1
        assert second_reader.line(), "the newer request goes on"
        lines = []
        try:
            while True:  # the older one was cut: its stream ends (with an error line)
                lines.append(first_reader.line())
        except EOFError:
            pass
        assert b"cancelled from the dashboard" in lines[-1], lines[-3:]
        assert server.cancel("shared") is True
        wait_until(lambda: server.status()["counts"]["cancelled"] == 2, message="the second request to be counted cancelled")
    finally:
        for reader, sock in ((first_reader, first), (second_reader, second)):
            reader.close()
            sock.close()
