"""Who may call: loopback by default, an API key off loopback, no foreign browser origins, no rebound
Host names, and no listening socket but the HTTP port."""

from __future__ import annotations

import os
import sys

import psutil
import pytest
import requests

import apis
import litkit
from helpers import assert_clean_stop, litkit_command, running

KEY = "k" * 20 + "-secret"


def post(server, headers=None, path="/predict", body=None):
    return requests.post(server.url + path, json={"input": 2} if body is None else body, headers=headers or {}, timeout=10)


# -- API key --------------------------------------------------------------------------------------


def test_a_non_loopback_host_needs_an_api_key():
    with pytest.raises(ValueError, match=r"host='0.0.0.0' lets other machines reach the server, so it needs an API key: pass api_key='auto'"):
        litkit.serve(apis.Doubler(), host="0.0.0.0", port=0)


@pytest.mark.parametrize(("key", "message"), [("short", "at least 16 characters"), ("with space " * 3, "visible ASCII"), (123, "visible ASCII")])
def test_a_bad_api_key_is_refused_at_serve(key, message):
    with pytest.raises(ValueError, match=message):
        litkit.serve(apis.Doubler(), port=0, api_key=key)


def test_auto_key_off_loopback_guards_everything_but_health(serve):
    server = serve(apis.Doubler(), host="0.0.0.0", api_key="auto")
    key = server.api_key
    assert isinstance(key, str) and len(key) >= 40
    assert key not in repr(server)
    for headers in ({}, {"Authorization": "Bearer wrong-key-of-some-length"}, {"X-API-Key": key[:-1]}, {"Authorization": key}, {"Authorization": f"Basic {key}"}):
        refused = post(server, headers)
        assert refused.status_code == 401, headers
        assert "missing or wrong API key" in refused.json()["error"]
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert post(server, {"Authorization": f"Bearer {key}"}).json() == {"output": 4}
    assert post(server, {"X-API-Key": key}).json() == {"output": 4}
    assert requests.get(server.url + "/health", timeout=10).status_code == 200  # open, for probes
    assert requests.get(server.url + "/info", timeout=10).status_code == 401
    assert requests.get(server.url + "/nope", timeout=10).status_code == 401  # no path probing either
    assert requests.get(server.url + "/info", headers={"X-API-Key": key}, timeout=10).status_code == 200
    assert server.status()["counts"]["completed"] == 2  # refused requests never reach a worker


def test_the_clients_send_the_key(serve):
    server = serve(apis.Ticker(), api_key=KEY)
    assert list(server.stream({"n": 2})) == [{"i": 0}, {"i": 1}]
    assert list(litkit.Client(server.url, api_key=KEY).stream({"n": 1})) == [{"i": 0}]
    with pytest.raises(litkit.HTTPError) as refused:
        list(litkit.Client(server.url).stream({"n": 1}))
    assert refused.value.status == 401


def test_the_cli_prints_the_generated_key_and_curl_sends_it(tmp_path):
    with running([*litkit_command(), "demo", "--port", "0", "--host", "0.0.0.0", "--api-key", "auto"]) as server:
        endpoint = server.wait_for_banner()
        key = server.wait_for_output(r"api key:  (\S+)")[1]
        assert f"-H 'Authorization: Bearer {key}'" in server.stdout
        assert requests.post(endpoint, json={"prompt": "a b", "delay": 0}, timeout=10).status_code == 401
        answer = requests.post(endpoint, json={"prompt": "a b", "delay": 0}, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert answer.status_code == 200
        assert_clean_stop(server)


def test_run_prints_the_generated_key(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(
        "import litkit\n"
        "class Echo(litkit.LitAPI):\n"
        "    def predict(self, x):\n"
        "        return x\n"
        "litkit.run(Echo(), port=0, host='0.0.0.0', api_key='auto')\n"
    )
    with running([sys.executable, str(script)]) as server:
        endpoint = server.wait_for_banner()
        key = server.wait_for_output(r"api key:  (\S+)")[1]
        assert requests.post(endpoint, json={"x": 1}, headers={"X-API-Key": key}, timeout=10).json() == {"x": 1}
        assert_clean_stop(server)


# -- browsers: Origin and Host --------------------------------------------------------------------


def test_a_page_from_a_foreign_origin_is_refused_before_any_work(serve, events):
    server = serve(apis.Echo(events.path))
    for origin in ("http://evil.example", "null", "http://localhost:3000"):
        refused = post(server, {"Origin": origin}, body={"tag": "from a page"})
        assert refused.status_code == 403
        assert f"requests from the web origin '{origin}' are refused; serve with cors_origins=['{origin}']" in refused.json()["error"]
        assert "Access-Control-Allow-Origin" not in refused.headers
    assert events.named("request") == []
    same_origin = post(server, {"Origin": server.url}, body={"x": 1})  # a page served from the server's own origin
    assert same_origin.status_code == 200
    assert post(server, body={"x": 1}).status_code == 200  # no Origin: not a browser page


def test_cors_origins_star_allows_any_page(serve, events):
    """README: ``cors_origins=["*"]`` lets pages from any origin call the server."""
    server = serve(apis.Echo(events.path), cors_origins=["*"])
    for origin in ("http://evil.example", "https://lab.example.org:8443"):
        answered = post(server, {"Origin": origin}, body={"tag": origin})
        assert answered.status_code == 200, answered.text
        assert answered.headers["Access-Control-Allow-Origin"] == origin
    assert [e["tag"] for e in events.named("request")] == ["http://evil.example", "https://lab.example.org:8443"]


def test_cors_origins_allows_a_page_and_answers_its_preflight(serve):
    page = "http://localhost:3000"
    server = serve(apis.Echo(), cors_origins=[page], api_key=KEY)
    preflight = requests.options(
        server.url + "/predict",
        headers={"Origin": page, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"},
        timeout=10,
    )
    assert preflight.status_code == 204  # no key needed: browsers send preflights without credentials
    assert preflight.headers["Access-Control-Allow-Origin"] == page
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    assert "Origin" in preflight.headers["Vary"]
    answer = post(server, {"Origin": page, "Authorization": f"Bearer {KEY}"}, body={"x": 1})
    assert answer.json() == {"echo": {"x": 1}}
    assert answer.headers["Access-Control-Allow-Origin"] == page
    assert "X-Request-ID" in answer.headers["Access-Control-Expose-Headers"]
    assert post(server, {"Origin": page}, body={"x": 1}).status_code == 401  # the key still applies
    foreign = requests.options(server.url + "/predict", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}, timeout=10)
    assert foreign.status_code == 403
    assert "Access-Control-Allow-Origin" not in foreign.headers


def test_an_allowed_page_can_read_why_it_was_refused_on_every_path(serve):
    """A refusal past the Origin check (a missing key, a wrong method) carries the CORS headers of an
    allowed page, so the page can read the error, alike on an endpoint (the relay) and on the other
    paths (the Tornado handlers): both run ``litkit.server.access.check_access``."""
    page = "http://localhost:3000"
    server = serve(apis.Echo(), cors_origins=[page], api_key=KEY)
    refusals = [
        post(server, {"Origin": page}, body={"x": 1}),
        requests.get(server.url + "/predict", headers={"Origin": page, "Authorization": f"Bearer {KEY}"}, timeout=10),
        requests.get(server.url + "/info", headers={"Origin": page}, timeout=10),
    ]
    assert [refused.status_code for refused in refusals] == [401, 405, 401]
    for refused in refusals:
        assert refused.headers["Access-Control-Allow-Origin"] == page, refused.request.url
        assert refused.json()["error"], refused.text


def test_cors_origins_is_validated():
    with pytest.raises(ValueError, match="cors_origins must be a list of origins"):
        litkit.serve(apis.Echo(), port=0, cors_origins="http://localhost:3000")
    with pytest.raises(ValueError, match="no path"):
        litkit.serve(apis.Echo(), port=0, cors_origins=["http://localhost:3000/app"])


def test_on_loopback_a_foreign_host_name_is_refused(serve, events):
    """DNS rebinding: a foreign name resolved to 127.0.0.1 arrives with that name in Host."""
    server = serve(apis.Echo(events.path))
    port = server.port
    refused = post(server, {"Host": f"rebind.evil.example:{port}"}, body={"tag": "rebound"})
    assert refused.status_code == 403
    assert "is not a loopback name" in refused.json()["error"]
    assert requests.get(server.url + "/health", headers={"Host": "evil.example"}, timeout=10).status_code == 403
    assert events.named("request") == []
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "127.0.0.1", f"[::1]:{port}", "LOCALHOST"):
        assert post(server, {"Host": host}, body={"x": 1}).status_code == 200, host


@pytest.mark.parametrize("host", ["[::1].evil.example", "[::1]@evil.example", "127.0.0.1:evil.example", "localhost@evil.example", "127.0.0.1:80:80", "[::1]:80x", "localhost/x"])
def test_on_loopback_a_host_header_that_is_not_host_and_port_is_refused(serve, events, host):
    """Regression (issue 14, weak spot): the Host check took ``[::1].evil.example``,
    ``[::1]@evil.example`` and ``127.0.0.1:evil.example`` for loopback names; Host is now parsed
    strictly (RFC 3986 host, optional port) and anything else is a 400."""
    server = serve(apis.Echo(events.path))
    refused = post(server, {"Host": host}, body={"tag": "rebound"})
    assert refused.status_code == 400, refused.text
    assert "is not a host name or address with an optional :port" in refused.json()["error"]
    assert events.named("request") == []


def test_behind_a_notebook_proxy_its_host_name_is_served(serve, monkeypatch):
    """jupyter-server-proxy forwards the browser's Host (the hub's name) to the loopback server."""
    monkeypatch.setenv("LITKIT_PROXY_URL", "https://lab.example.org/user/ada/proxy/{port}")
    server = serve(apis.Echo())
    assert post(server, {"Host": "lab.example.org"}, body={"x": 1}).status_code == 200
    assert post(server, {"Host": "rebind.evil.example"}, body={"x": 1}).status_code == 403
    assert post(server, {"Host": "lab.example.org", "Origin": "https://lab.example.org"}, body={"x": 1}).status_code == 200
    server.stop()
    monkeypatch.delenv("LITKIT_PROXY_URL")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada/")
    hub = serve(apis.Echo())  # in a JupyterHub single-user server the browser is on another machine
    assert post(hub, {"Host": "hub.example.org"}, body={"x": 1}).status_code == 200
    assert post(hub, {"Host": "hub.example.org", "Origin": "https://evil.example"}, body={"x": 1}).status_code == 403


def test_off_loopback_any_host_name_is_served(serve):
    server = serve(apis.Echo(), host="0.0.0.0", api_key=KEY)
    assert post(server, {"Host": "my-laptop.lan:1234", "X-API-Key": KEY}, body={"x": 1}).status_code == 200


# -- nothing listens but the HTTP port ------------------------------------------------------------


def _listening_unix_inodes() -> set[int]:
    inodes = set()
    with open("/proc/net/unix") as table:
        next(table)
        for line in table:
            fields = line.split()
            if int(fields[3], 16) & 0x10000:  # __SO_ACCEPTCON: a listening socket
                inodes.add(int(fields[6]))
    return inodes


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def test_only_the_http_port_listens_in_the_server_and_its_workers():
    """Nothing is ever unpickled from the network: the worker channel is inherited, never listened for."""
    with running([*litkit_command(), "demo", "--port", "0", "--workers", "2"]) as server:
        endpoint = server.wait_for_banner()
        port = int(endpoint.rsplit(":", 1)[1].split("/")[0])
        processes = [psutil.Process(server.pid), *server.record_children()]
        assert len(processes) == 3
        listening = [(p.pid, c.laddr) for p in processes for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert listening == [(server.pid, ("127.0.0.1", port))]
        unix_listeners = _listening_unix_inodes()
        for process in processes:
            assert not (_socket_inodes(process.pid) & unix_listeners), f"pid {process.pid} listens on a unix socket"
        assert_clean_stop(server)
