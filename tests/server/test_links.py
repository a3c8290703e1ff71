"""The link a notebook shows for a server, behind JupyterHub or another proxy."""

from __future__ import annotations

from litkit.server.links import public_url

LOCAL = "http://127.0.0.1:8000"


def test_without_a_proxy_the_url_is_the_server_s():
    assert public_url(LOCAL, 8000, {}) == LOCAL


def test_jupyterhub_prefix_gives_the_jupyter_server_proxy_route():
    assert public_url(LOCAL, 8000, {"JUPYTERHUB_SERVICE_PREFIX": "/user/ada/"}) == "/user/ada/proxy/8000"
    assert public_url(LOCAL, 8000, {"JUPYTERHUB_SERVICE_PREFIX": "/user/ada"}) == "/user/ada/proxy/8000"


def test_litkit_proxy_url_template_wins():
    environ = {"LITKIT_PROXY_URL": "https://lab.example.org/user/ada/proxy/{port}/", "JUPYTERHUB_SERVICE_PREFIX": "/user/ada/"}
    assert public_url(LOCAL, 8123, environ) == "https://lab.example.org/user/ada/proxy/8123"
    assert public_url(LOCAL, 8123, {"LITKIT_PROXY_URL": "https://{port}.apps.example.org"}) == "https://8123.apps.example.org"


def test_blank_variables_are_ignored():
    assert public_url(LOCAL, 8000, {"LITKIT_PROXY_URL": " ", "JUPYTERHUB_SERVICE_PREFIX": ""}) == LOCAL


def test_under_jupyterhub_a_server_registered_with_litkit_s_route_links_to_it(tmp_path):
    from litkit.server import jupyter_route
    from litkit.wire.registration import REGISTRY_ENV, ROUTE_ENV

    environ = {"JUPYTERHUB_SERVICE_PREFIX": "/user/ada/", ROUTE_ENV: "/user/ada/litkit", REGISTRY_ENV: str(tmp_path)}
    assert public_url(LOCAL, 8000, environ) == "/user/ada/proxy/8000"  # not registered (yet)
    assert jupyter_route.announce(8000, LOCAL, environ)
    assert public_url(LOCAL, 8000, environ) == "/user/ada/litkit/8000"
    assert public_url(LOCAL, 8000, {**environ, "LITKIT_PROXY_URL": "https://x.example.org/{port}"}) == "https://x.example.org/8000"
    # Outside JupyterHub the browser reaches loopback itself: the direct URL.
    assert public_url(LOCAL, 8000, {**environ, "JUPYTERHUB_SERVICE_PREFIX": ""}) == LOCAL
    jupyter_route.withdraw(8000, environ)
    assert public_url(LOCAL, 8000, environ) == "/user/ada/proxy/8000"


def test_a_registration_that_failed_links_to_jupyter_server_proxy(tmp_path, caplog):
    from litkit.server import jupyter_route
    from litkit.wire.registration import REGISTRY_ENV, ROUTE_ENV

    environ = {"JUPYTERHUB_SERVICE_PREFIX": "/user/ada/", ROUTE_ENV: "/user/ada/litkit", REGISTRY_ENV: str(tmp_path / "gone")}
    assert not jupyter_route.announce(8000, LOCAL, environ)
    assert "could not register port 8000 with litkit's Jupyter route" in caplog.text
    assert public_url(LOCAL, 8000, environ) == "/user/ada/proxy/8000"
