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
``fastapi.HTTPException`` (recognised by its ``status_code`` and ``detail``), or by returning a
false value. It fails closed (issue 25, bug 5):

* a hook that returns values (``return token and compare(...)``) allows a request only by returning
  something true: ``False``, ``None``, ``""`` or ``0`` refuse it (401). A hook that never returns a
  value (LitServe's form, where refusing is raising) allows a request by returning without raising.
  Which of the two a hook is, litkit reads once from its code: whether any ``return`` has a value;
* any other exception refuses it with 403, without the exception's text (it may hold a secret or
  say how the check works); the server logs it at WARNING with its traceback the first time (per
  type and message), at DEBUG after that, so a client cannot flood the log.
"""

from __future__ import annotations

import dis
import inspect
import logging
import threading
import types
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
    call = _Caller(hook, name)

    def authorize(headers: Mapping[str, str], method: str, url: str) -> None:
        call(AuthRequest(headers, method, url))

    return authorize


def _bearer_authorizer(hook: Callable[[Any], Any], name: str) -> Authorizer:
    call = _Caller(hook, name)

    def authorize(headers: Mapping[str, str], method: str, url: str) -> None:
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AccessDenied(401, "Not authenticated: send 'Authorization: Bearer TOKEN'")
        call(BearerCredentials(scheme, token.strip()))

    return authorize


_LOGGED_FAILURES = 100  # distinct (type, message) failures logged at WARNING per hook; the rest at DEBUG


class _Caller:
    """Calls the hook for one request and turns what it did into a refusal or nothing (fail closed)."""

    def __init__(self, hook: Callable[[Any], Any], name: str) -> None:
        self.hook = hook
        self.name = name
        self.returns_values = returns_values(hook)
        self._logged: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, argument: Any) -> None:
        try:
            allowed = self.hook(argument)
        except HTTPError as error:
            raise AccessDenied(error.status, error.message) from None
        except Exception as error:  # noqa: BLE001 - a failing hook refuses the request; the server lives on
            status = http_exception_status(error)
            if status is not None:
                raise AccessDenied(*status, detail=http_exception_detail(error)) from None
            self._log(error)
            raise AccessDenied(403, f"{self.name}.authorize could not decide on this request, so it is refused") from None
        if (allowed is None and self.returns_values) or (allowed is not None and not allowed):
            raise AccessDenied(401, f"{self.name}.authorize refused this request")

    def _log(self, error: Exception) -> None:
        key = (type(error).__name__, str(error)[:200])
        with self._lock:
            first = key not in self._logged and len(self._logged) < _LOGGED_FAILURES
            if first:
                self._logged.add(key)
        if first:
            logger.warning("%s.authorize raised %s, so its request was refused with 403 (logged once; fix the hook)", self.name, key[0], exc_info=error)
        else:
            logger.debug("%s.authorize raised %s: %s (refused with 403)", self.name, key[0], key[1])


def returns_values(hook: Callable[..., Any]) -> bool:
    """Whether any ``return`` of ``hook`` has a value other than a bare ``None``: then its ``None``
    means "no" (``return token and ...`` with no token). A hook whose code cannot be read counts as
    returning values, so only a true answer lets a request through."""
    function = getattr(hook, "__func__", hook)
    code = getattr(function, "__code__", None)
    if not isinstance(code, types.CodeType):
        return True
    instructions = list(dis.get_instructions(code))
    for index, instruction in enumerate(instructions):
        if instruction.opname == "RETURN_CONST" and instruction.argval is not None:  # 3.12+
            return True
        if instruction.opname == "RETURN_VALUE":
            before = instructions[index - 1] if index else None
            if before is None or before.opname != "LOAD_CONST" or before.argval is not None:
                return True
    return False
