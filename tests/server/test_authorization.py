"""An API's own ``authorize()`` hook fails closed (``litkit.server.authorization``; issue 25, bug 5)."""

from __future__ import annotations

import logging

import requests

import apis
from conftest import assert_nothing_at_error


def post(server, headers=None):
    return requests.post(server.url + "/predict", json={"input": 3}, headers=headers or {}, timeout=10)


def test_an_authorize_that_raises_refuses_with_403_without_its_text_and_logs_once(serve, caplog):
    """Issue 25, bug 5: an ``authorize()`` raising a plain exception answered 500 with the
    exception's text to the unauthenticated caller, and logged a traceback at ERROR each time."""
    caplog.set_level(logging.DEBUG, logger="litkit.server")
    server = serve(apis.CrashingAuthorize())
    answers = [post(server) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [403] * 3
    assert all("hunter2" not in answer.text and "RuntimeError" not in answer.text for answer in answers)
    assert "could not decide on this request" in answers[0].json()["error"]
    warnings = [r for r in caplog.records if r.name == "litkit.server" and r.levelno == logging.WARNING and "authorize raised" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].exc_info is not None  # once, with its traceback, for the operator
    assert_nothing_at_error(caplog)


def test_an_authorize_that_returns_a_false_value_refuses(serve):
    """Issue 25, bug 5: ``return token and compare(...)`` returns None without a token and "" with
    an empty one, and both let the request through."""
    server = serve(apis.ValueReturningAuthorize())
    assert post(server).status_code == 401  # None
    assert post(server, {"X-Token": ""}).status_code == 401  # ""
    assert post(server, {"X-Token": "wrong"}).status_code == 401  # False
    right = post(server, {"X-Token": "right"})
    assert (right.status_code, right.json()) == (200, {"output": 6})


def test_an_authorize_that_only_raises_allows_by_returning(serve):
    """LitServe's form (refusing is raising, allowing is returning nothing) keeps working."""
    server = serve(apis.RaisingOnlyAuthorize())
    assert post(server, {"X-Token": "wrong"}).status_code == 401
    assert post(server, {"X-Token": "right"}).json() == {"output": 6}
