"""Who may call the server: the API key, the browser ``Origin`` rule, and the loopback ``Host`` rule.

Three independent checks, each answering one attack:

* **API key** (``serve(api_key=...)``): any caller that can reach the port. Required when the
  server listens on anything but loopback. Compared in constant time; sent as
  ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. ``/health`` stays open, and a CORS
  preflight (which browsers send without credentials) needs no key.
* **Origin**: a web page in the user's browser, from another site, posting to the server (a
  browser sends simple POSTs without asking first; it only hides the answer). A request with an
  ``Origin`` header is refused unless that origin is the server's own or is in ``cors_origins``.
* **Host** (loopback only): DNS rebinding, where a foreign site's name is made to resolve to
  127.0.0.1 so the browser treats the server as same-origin. Such requests carry the foreign name
  in ``Host``; a loopback server answers only ``localhost`` and loopback addresses, plus the host
  of ``LITKIT_PROXY_URL`` when set. Inside a JupyterHub single-user server
  (``JUPYTERHUB_SERVICE_PREFIX`` set) the check is off: jupyter-server-proxy forwards the hub's
  own name in ``Host``, and the browser is not on the server's machine, so its loopback cannot be
  rebound to the server.

``check_access`` runs them in one order for every handler: the endpoints' relay
(``litkit.server.relay``) and the small Tornado handlers (``litkit.server.handlers``) both call it,
and both send the answer headers defined here. Server side only.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import os
import re
import secrets
import socket
import urllib.parse
from typing import Callable, Iterable, Mapping

__all__ = [
    "AccessPolicy", "AccessDenied", "check_access", "is_loopback_host", "make_api_key", "check_api_key", "check_cors_origins",
    "proxied_hosts", "cors_headers", "PREFLIGHT_HEADERS", "PREFLIGHT_REFUSED", "KEY_CHALLENGE",
]

MIN_KEY_LENGTH = 16
# Headers a browser page may send cross-origin once its origin is allowed.
CORS_ALLOW_HEADERS = "Authorization, X-API-Key, Content-Type, Accept, X-Request-ID"
CORS_ALLOW_METHODS = "GET, POST, OPTIONS"
CORS_MAX_AGE_S = 600
# What an answer to an allowed CORS preflight carries besides cors_headers().
PREFLIGHT_HEADERS = (
    ("Access-Control-Allow-Methods", CORS_ALLOW_METHODS),
    ("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS),
    ("Access-Control-Max-Age", str(CORS_MAX_AGE_S)),
)
PREFLIGHT_REFUSED = "OPTIONS is only answered as a CORS preflight from an allowed Origin"
# The WWW-Authenticate value of a 401.
KEY_CHALLENGE = 'Bearer realm="litkit"'


class AccessDenied(Exception):
    """A request failed a check: ``status`` (400, 401, 403 or 405) and a message that says what to do;
    ``detail``, the ``fastapi.HTTPException`` detail of an API's ``authorize`` hook, if it raised one;
    ``cors_origin``, set by ``check_access`` once the Origin check passed: the origin to echo in the
    refusal's CORS headers, so that an allowed page can read it."""

    def __init__(self, status: int, message: str, detail: object = None) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.detail = detail
        self.cors_origin: str | None = None


def cors_headers(origin: str) -> tuple[tuple[str, str], ...]:
    """The headers that let a page of the allowed ``origin`` read an answer (its request id too)."""
    return (
        ("Access-Control-Allow-Origin", origin),
        ("Access-Control-Expose-Headers", "X-Request-ID"),
        ("Vary", "Origin"),
    )


def make_api_key() -> str:
    """A fresh random key (256 bits, URL-safe), for ``api_key="auto"``."""
    return secrets.token_urlsafe(32)


def check_api_key(api_key: object) -> None:
    """Raise ValueError unless ``api_key`` is None or a usable key (visible ASCII, long enough)."""
    if api_key is None:
        return
    if not isinstance(api_key, str) or not api_key.isascii() or not api_key.isprintable() or " " in api_key:
        raise ValueError(f"api_key must be a string of visible ASCII characters without spaces, or 'auto'; got {api_key!r}")
    if len(api_key) < MIN_KEY_LENGTH:
        raise ValueError(f"api_key must be at least {MIN_KEY_LENGTH} characters long, got {len(api_key)}; pass api_key='auto' to generate one")


def check_cors_origins(cors_origins: object) -> tuple[str, ...]:
    """The origins as a tuple; raise ValueError unless each is ``"*"`` or ``scheme://host[:port]``."""
    if isinstance(cors_origins, str) or not isinstance(cors_origins, Iterable):
        raise ValueError(f"cors_origins must be a list of origins such as ['http://localhost:3000'] (or ['*']), got {cors_origins!r}")
    origins = tuple(cors_origins)
    for origin in origins:
        if origin == "*":
            continue
        if not isinstance(origin, str) or "://" not in origin or origin.endswith("/") or origin.count("/") != 2:
            raise ValueError(
                f"each of cors_origins must be '*' or an origin like 'http://localhost:3000' (scheme, host, optional port, no path), got {origin!r}"
            )
    return origins


def is_loopback_host(host: str) -> bool:
    """Whether every address ``host`` names is a loopback address (``localhost``, ``127.0.0.1``, ``::1``)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror:
        return False
    return bool(addresses) and all(ipaddress.ip_address(str(address[4][0]).split("%")[0]).is_loopback for address in addresses)


def proxied_hosts(environ: Mapping[str, str] | None = None) -> frozenset[str] | None:
    """Host names a notebook proxy forwards besides loopback ones: the host of ``LITKIT_PROXY_URL``;
    None (any name) inside a JupyterHub single-user server; else none."""
    environ = os.environ if environ is None else environ
    template = environ.get("LITKIT_PROXY_URL", "").strip()
    if template:
        name = urllib.parse.urlsplit(template.replace("{port}", "0")).hostname
        return frozenset([name.lower()] if name else [])
    if environ.get("JUPYTERHUB_SERVICE_PREFIX", "").strip():
        return None
    return frozenset()


@functools.lru_cache(maxsize=256)  # on every request's path; clients send the same few names
def _is_loopback_name(name: str) -> bool:
    """A Host header's name part that cannot be a rebound foreign name: localhost, a loopback IP, or
    the unspecified address (0.0.0.0, ::)."""
    name = name.lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    # 0.0.0.0 and :: as a destination reach this machine (LitServe's own benchmark calls
    # http://0.0.0.0:8000). No DNS name is involved, so nothing can be rebound; a page of another
    # origin that calls it is still refused by the Origin check.
    return address.is_loopback or address.is_unspecified


# A Host header as RFC 9110 has it: uri-host [ ":" port ], uri-host being an IP literal in brackets
# or a reg-name (unreserved, pct-encoded and sub-delims characters of RFC 3986; IPv4 addresses are
# reg-names too). No "@", no "/", nothing after the port.
_HOST = re.compile(r"(?P<name>\[[0-9A-Za-z:.%~_\-]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")


def _split_host(host_header: str) -> str | None:
    """The name part of a Host header (``[::1]:8000`` -> ``[::1]``, ``localhost:8000`` -> ``localhost``);
    None when the header is not ``host[:port]`` (``[::1].evil.example``, ``[::1]@evil.example``,
    ``127.0.0.1:evil.example``)."""
    match = _HOST.fullmatch(host_header)
    return match.group("name") if match is not None else None


class AccessPolicy:
    """The checks one server applies to every request.

    Args:
        api_key: the key callers must send, or None for none.
        cors_origins: browser origins allowed besides the server's own; ``"*"`` allows any.
        loopback_only: the server listens on loopback only, so ``Host`` must be a loopback name.
        proxied_hosts: other names ``Host`` may carry on loopback (a notebook proxy's), or None for
            any (see ``proxied_hosts()``).
    """

    def __init__(self, api_key: str | None, cors_origins: Iterable[str], loopback_only: bool, proxied_hosts: frozenset[str] | None = frozenset()) -> None:
        self.api_key = api_key
        self._key_bytes = api_key.encode() if api_key is not None else None
        self.cors_origins = frozenset(cors_origins)
        self.loopback_only = loopback_only
        self.proxied_hosts = proxied_hosts

    def check_host(self, host_header: str) -> None:
        if not self.loopback_only or self.proxied_hosts is None:
            return
        name = _split_host(host_header)
        if name is None:
            raise AccessDenied(
                400,
                f"Host {host_header!r} is not a host name or address with an optional :port; "
                "send Host: localhost:PORT or 127.0.0.1:PORT",
            )
        if not _is_loopback_name(name) and name.lower() not in self.proxied_hosts:
            raise AccessDenied(
                403,
                f"Host {host_header!r} is not a loopback name; this server listens on loopback only, so "
                "call it as localhost or 127.0.0.1 (a foreign name here is a DNS-rebinding attempt); "
                "behind a notebook proxy, set LITKIT_PROXY_URL to the proxy's URL",
            )

    def allowed_origin(self, origin: str | None, host_header: str) -> str | None:
        """The origin to echo in CORS headers (None when the request has none).

        Raises:
            AccessDenied: the request comes from a page of another origin that is not allowed.
        """
        if origin is None:
            return None
        if origin in self.cors_origins or "*" in self.cors_origins:
            return origin
        if origin in (f"http://{host_header}", f"https://{host_header}"):
            return None  # same origin: no CORS headers needed
        raise AccessDenied(
            403,
            f"requests from the web origin {origin!r} are refused; serve with cors_origins=[{origin!r}] "
            "to let pages from it call this server",
        )

    def check_key(self, headers: Mapping[str, str]) -> None:
        if self._key_bytes is None:
            return
        offered = headers.get("X-API-Key")
        if offered is None:
            scheme, _, token = headers.get("Authorization", "").partition(" ")
            offered = token.strip() if scheme.lower() == "bearer" else None
        # compare_digest takes time independent of where the strings differ.
        if offered is None or not hmac.compare_digest(offered.encode(errors="replace"), self._key_bytes):
            raise AccessDenied(
                401,
                "missing or wrong API key; send it as 'Authorization: Bearer KEY' or 'X-API-Key: KEY' "
                "(litkit.Client(url, api_key=KEY) does this)",
            )


def check_access(
    policy: AccessPolicy,
    headers: Mapping[str, str],
    method: str,
    *,
    key_needed: bool = True,
    methods: tuple[str, ...] | None = None,
    path: str = "",
    authorize: Callable[[Mapping[str, str], str, str], None] | None = None,
    uri: str = "",
) -> str | None:
    """The access checks of one request, in the one order every handler runs them: Host, then Origin;
    a CORS preflight (``OPTIONS``) stops there, since browsers send it without credentials; then the
    method, the API key and the API's own ``authorize`` hook.

    Args:
        policy: the server's checks.
        headers: the request's headers.
        method: the request's method.
        key_needed: False for a path open to any caller (``/health``): no API key is asked for.
        methods: the methods ``path`` answers (an endpoint's ``POST`` and ``OPTIONS``); another is
            refused with 405 before the key is checked. None: the handler checks its methods itself.
        path: the path, named in the 405's message.
        authorize: the API's ``authorize`` hook (``litkit.server.authorization``), called with the
            headers, the method and ``uri`` once every other check passed; None for none.
        uri: the request's URI, for ``authorize``.

    Returns:
        The origin to echo in CORS headers, or None when the request needs none.

    Raises:
        AccessDenied: a check failed; its status (400, 401, 403 or 405) and message say which, and
            its ``cors_origin`` is the origin to echo once the Origin check passed.
    """
    host = headers.get("Host", "")
    policy.check_host(host)
    origin = policy.allowed_origin(headers.get("Origin"), host)
    if method == "OPTIONS":
        return origin
    try:
        if methods is not None and method not in methods:
            raise AccessDenied(405, f"{method} is not allowed on {path}; send a POST with a JSON body")
        if key_needed:
            policy.check_key(headers)
        if authorize is not None:
            authorize(headers, method, uri)
    except AccessDenied as denied:
        denied.cors_origin = origin
        raise
    return origin
