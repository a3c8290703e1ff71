"""An API's own ``authorize`` hook: called in the serving process for every request, before the body is read.

``class MyAPI(litkit.LitAPI): def authorize(self, request): ...`` (LitServe's hook) decides who may
call an endpoint. It runs on the server's thread, on the API object as it is in the serving process
(``setup`` has not run there), after the server's own checks (Host, Origin, ``api_key``), so keep it
quick: a token comparison, not a network call. Two forms are taken:

* ``def authorize(self, request)``: ``request`` has ``headers`` (case-insensitive), ``method``,
  ``path`` and ``url``;
* LitServe's FastAPI form, ``def authorize(self, auth: HTTPAuthorizationCredentials = Depends(HTTPBearer()))``:
  ``auth`` has ``scheme`` and ``credentials`` from the ``Authorization`` header; without a bearer
  token the request gets 401, as FastAPI's ``HTTPBearer`` refuses it (fastapi is never imported).

The hook refuses a request by raising ``litkit.HTTPError(status, message)``, a
``fastapi.HTTPException`` (recognised by its ``status_code`` and ``detail``), or by returning
``False`` (401; LitServe would let such a request through). Any other exception is a 500 and is logged.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable, Mapping

from ..errors import HTTPError, http_exception_detail, http_exception_status
from .access import AccessDenied

__all__ = ["Authorizer", "AuthRequest", "BearerCredentials", "make_authorizer"]

logger = logging.getLogger("litkit.server")

# Called with the request's headers, method and URI; raises AccessDenied to refuse it.
Authorizer = Callable[[Mapping[str, str], str, str], None]


class AuthRequest:
    """What ``authorize(self, request)`` receives: the request before its body is read."""

    __slots__ = ("headers", "method", "url", "path")

    def __init__(self, headers: Mapping[str, str], method: str, url: str) -> None:
        self.headers = headers
        self.method = method
        self.url = url
        self.path = url.split("?", 1)[0]

    def __repr__(self) -> str:
        return f"<AuthRequest {self.method} {self.url}>"


class BearerCredentials:
    """FastAPI's ``HTTPAuthorizationCredentials``: ``scheme`` (``"Bearer"``) and ``credentials`` (the token)."""

    __slots__ = ("scheme", "credentials")

    def __init__(self, scheme: str, credentials: str) -> None:
        self.scheme = scheme
        self.credentials = credentials


def make_authorizer(api: Any) -> Authorizer | None:
    """The check that calls ``api.authorize`` for each request, or None when the API has no such hook.

    Raises:
        TypeError: ``authorize`` has a form litkit cannot call (async, or another FastAPI dependency).
    """
    hook = getattr(api, "authorize", None)
    if hook is None:
        return None
    name = type(api).__name__
    if not callable(hook):
        raise TypeError(f"{name}.authorize must be a method `def authorize(self, request)`, got {type(hook).__name__}")
    if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(getattr(hook, "__func__", None)):
        raise TypeError(
            f"{name}.authorize is async; litkit calls authorize on the server's thread before the body is read, "
            "so write it as a plain `def authorize(self, request)` (compare tokens there, no awaits)"
        )
    parameters = list(inspect.signature(hook).parameters.values())
    if len(parameters) != 1 or parameters[0].kind not in (parameters[0].POSITIONAL_ONLY, parameters[0].POSITIONAL_OR_KEYWORD):
        raise TypeError(f"{name}.authorize must take one argument besides self, `def authorize(self, request)`; got {inspect.signature(hook)}")
    dependency = getattr(parameters[0].default, "dependency", None)  # fastapi.Depends(...) keeps it here
    if dependency is not None:
        if type(dependency).__name__ != "HTTPBearer":
            raise TypeError(
                f"{name}.authorize depends on {type(dependency).__name__}, a FastAPI dependency litkit cannot provide; "
                "use `def authorize(self, auth: HTTPAuthorizationCredentials = Depends(HTTPBearer()))` or "
                "`def authorize(self, request)` and read request.headers"
            )
        return _bearer_authorizer(hook, name)
    return _request_authorizer(hook, name)


def _request_authorizer(hook: Callable[[Any], Any], name: str) -> Authorizer:
    def authorize(headers: Mapping[str, str], method: str, url: str) -> None:
        _call(hook, AuthRequest(headers, method, url), name)

    return authorize


def _bearer_authorizer(hook: Callable[[Any], Any], name: str) -> Authorizer:
    def authorize(headers: Mapping[str, str], method: str, url: str) -> None:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AccessDenied(401, "Not authenticated: send 'Authorization: Bearer TOKEN'")
        _call(hook, BearerCredentials(scheme, token.strip()), name)

    return authorize


def _call(hook: Callable[[Any], Any], argument: Any, name: str) -> None:
    try:
        allowed = hook(argument)
    except HTTPError as error:
        raise AccessDenied(error.status, error.message) from None
    except Exception as error:  # noqa: BLE001 - a failing hook refuses the request; the server lives on
        status = http_exception_status(error)
        if status is not None:
            raise AccessDenied(*status, detail=http_exception_detail(error)) from None
        logger.exception("%s.authorize raised", name)
        raise AccessDenied(500, f"{name}.authorize raised {type(error).__name__}: {error}") from None
    if allowed is False:
        raise AccessDenied(401, f"{name}.authorize refused this request")
