"""Errors say what happened and survive the process boundary."""

from __future__ import annotations

import pickle

import pytest

import litkit
from litkit.errors import PortInUseError, ServerStoppedError


@pytest.mark.parametrize(
    "error",
    [
        litkit.HTTPError(422, "input must be a list"),
        litkit.WorkerStartError(1, "setup raised", "Traceback ...\nValueError: x"),
        PortInUseError("127.0.0.1", 8000),
        ServerStoppedError("stopped"),
    ],
)
def test_errors_survive_a_pickle_round_trip(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args


def test_http_error_validates_its_status():
    with pytest.raises(ValueError, match="from 400 to 599, got 200"):
        litkit.HTTPError(200, "fine")
    with pytest.raises(ValueError, match="got True"):
        litkit.HTTPError(True, "no")
    assert str(litkit.HTTPError(404, "nothing here")) == "404: nothing here"


def test_worker_start_error_shows_the_worker_traceback():
    text = str(litkit.WorkerStartError(0, "setup raised ValueError: x", "Traceback (most recent call last):\nValueError: x\n"))
    assert text.startswith("worker 0 failed to start: setup raised ValueError: x")
    assert text.endswith("Traceback from the worker process:\nTraceback (most recent call last):\nValueError: x")
