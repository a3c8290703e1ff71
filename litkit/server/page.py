"""The page at ``/`` (and ``/docs``) that lists a server's endpoints and calls them, and ``/openapi.json``.

The page is one self-contained HTML document: ``static/page.html`` with ``static/page.css``,
``static/endpoint.js`` and ``static/page.js`` put inline, read once from the package. It fetches ``openapi.json`` (its
endpoints, examples and whether a key is needed; ``litkit.server.openapi``) and calls the endpoints
with relative URLs only, so it works behind a notebook proxy and through litkit's Jupyter route.
Its Content-Security-Policy allows only its own inline script and style (by hash) and requests to
its own origin: nothing is loaded from elsewhere, and no other origin can be reached from it.

Access: the page itself is open, like ``/health`` (it holds no data, only the code that asks for
it), but passes the Host and Origin checks; ``/openapi.json`` needs the API key when the server
has one, like ``/info``: it names the endpoints, their models and request schemas, which a keyed
server tells only to callers with the key. The page asks for the key when ``openapi.json`` says 401.

Under ``LitServer`` a ``GET /`` that does not ask for HTML gets LitServe's ``litserve running``
(``root_answer``): a client that checks that text keeps working, a browser gets the page.
``LitServer(disable_openapi_url=True)`` turns off ``/openapi.json``, ``/docs`` and the page (``/``
is then that text for every client), as it turns off FastAPI's ``/docs`` and ``/openapi.json``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from .endpoints import ServingState
from .handlers import JSONHandler
from .openapi import openapi_document

__all__ = ["LITSERVE_ROOT_TEXT", "page_routes", "root_answer"]

LITSERVE_ROOT_TEXT = "litserve running"  # what LitServe answers at GET /
_STATIC = Path(__file__).with_name("static")


def root_answer(accept: str | None, plain_text: str | None, page_served: bool = True) -> str:
    """What ``GET /`` sends: ``"page"``, or ``"text"`` when the server has a plain text for ``/``
    (``plain_text``: LitServer's ``litserve running``) and the client does not ask for HTML or the
    server serves no page (``page_served``: ``LitServer(disable_openapi_url=True)``)."""
    if plain_text is None:
        return "page"
    if not page_served:
        return "text"
    wanted = [part.split(";", 1)[0].strip().lower() for part in (accept or "").split(",")]
    return "page" if "text/html" in wanted else "text"


@functools.lru_cache(maxsize=1)
def page() -> tuple[bytes, str]:
    """The page's HTML (its CSS and JavaScript inline) and the Content-Security-Policy that lets
    only those run."""
    html = (_STATIC / "page.html").read_text(encoding="utf-8")
    css = (_STATIC / "page.css").read_text(encoding="utf-8")
    # One script: the Endpoint class first, then the page, which starts at its end.
    script = (_STATIC / "endpoint.js").read_text(encoding="utf-8") + "\n" + (_STATIC / "page.js").read_text(encoding="utf-8")
    html = html.replace("<style>/*litkit:css*/</style>", f"<style>{css}</style>").replace("<script>//litkit:js</script>", f"<script>{script}</script>")
    policy = "; ".join((
        "default-src 'none'",
        f"script-src {_digest(script)}",
        f"style-src {_digest(css)}",
        "connect-src 'self'",
        "img-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",
    ))
    return html.encode("utf-8"), policy


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


class PageHandler(JSONHandler):
    """``GET /`` and ``GET /docs``: the page (open, like /health; the calls it makes need the key)."""

    open = True

    def get(self) -> None:
        plain_text = self.serving.root_text
        if plain_text is not None and self.request.path == "/":
            self.set_header("Vary", "Accept")  # a cache must not hand the text to a browser, or the page to a client
        if self.request.path == "/" and root_answer(self.request.headers.get("Accept"), plain_text, self.serving.openapi) == "text":
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(plain_text)
            return
        body, policy = page()
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", policy)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-cache")
        self.finish(body)


class OpenAPIHandler(JSONHandler):
    """``GET /openapi.json`` (the API key, when the server has one)."""

    def initialize(self, state: Any, serving: ServingState, document: bytes = b"") -> None:
        super().initialize(state, serving)
        self.document = document

    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(self.document)


def page_routes(serving: ServingState) -> list[Any]:
    """The Tornado routes of the page and of the document (made once, here), for ``litkit.server.routing``."""
    options = {"state": serving, "serving": serving}
    if not serving.openapi:  # LitServer(disable_openapi_url=True): / is LitServe's text alone
        return [(r"/", PageHandler, options)]
    document = json.dumps(openapi_document(serving)).encode("utf-8")
    return [
        (r"/", PageHandler, options),
        (r"/docs", PageHandler, options),
        (r"/openapi.json", OpenAPIHandler, {**options, "document": document}),
    ]
