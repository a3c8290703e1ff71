"""Serving options are one typed value, checked the same way at every entry point (litkit.options)."""

from __future__ import annotations

import dataclasses
import inspect

import apis
import pytest
from conftest import assert_no_children, litkit_threads

import litkit
from litkit.options import ENDPOINT_OPTIONS, MAX_BATCH_SIZE, EndpointOptions, ServerOptions


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_timeout": 5000}, r"batch_timeout must be a number of seconds from 0 to 3600 \(e.g. 0.01\), got 5000"),
        ({"max_batch_size": 254}, r"max_batch_size must be an int from 1 to 253, got 254"),
        ({"api_path": "/v1//embed"}, r"api_path must be a path starting with '/', got '/v1//embed'"),
    ],
    ids=["batch_timeout", "max_batch_size", "api_path"],
)
def test_litapi_refuses_what_serve_refuses(options, message):
    """Regression (issue 22): ``LitAPI(batch_timeout=5000)`` passed while ``serve(batch_timeout=5000)``
    was refused; the API's constructor checked its options by rules of its own. Now both check
    them with ``litkit.options.check_option``, and say the same."""
    with pytest.raises(ValueError, match=message):
        litkit.LitAPI(**options)
    if "api_path" not in options:
        with pytest.raises(ValueError, match=message):
            litkit.serve(apis.Doubler(), port=0, **options)


def test_serve_refuses_a_stream_that_is_not_true_false_or_none():
    """Regression (issue 22): ``stream`` was read for its truth, so ``serve(Ticker(), stream="no")``
    served a stream, the opposite of what it says; now it is refused before any process starts."""
    with pytest.raises(ValueError, match=r"stream must be True, False or None .*, got 'no'"):
        litkit.serve(apis.Ticker(), port=0, stream="no")
    assert not litkit_threads()
    assert_no_children()


def test_an_endpoint_option_from_the_api_and_from_serve_must_agree():
    """The options an API was made with are served, unless serve() sets another value: that is an error, never a silent pick."""
    api = apis.Doubler()
    api.max_batch_size = 4  # LitServe's attribute, as LitAPI(max_batch_size=4) sets it
    with pytest.raises(ValueError, match=r"Doubler was made with max_batch_size=4 but is served with max_batch_size=8; set it in one place"):
        litkit.serve(api, port=0, max_batch_size=8)


def test_the_options_defaults_are_serves():
    """serve()'s signature shows each option's default; the typed options hold the same ones."""
    parameters = inspect.signature(litkit.serve).parameters
    fields = [field for cls in (EndpointOptions, ServerOptions) for field in dataclasses.fields(cls) if field.name not in ("given", "endpoint")]
    defaults = {field.name: field.default for field in fields}
    assert {name: parameters[name].default for name in defaults} == defaults
    assert set(ENDPOINT_OPTIONS) <= set(parameters)


def test_the_options_know_which_ones_were_set():
    """An endpoint's own options win over serve()'s only where it set them; the rest come from serve()."""
    served = EndpointOptions.of_call(**{**{name: getattr(EndpointOptions(), name) for name in ENDPOINT_OPTIONS}, "timeout": 7, "workers": 3})
    own = EndpointOptions.of({"workers": 2})
    merged = own.over(served)
    assert (merged.workers, merged.timeout, merged.max_queue) == (2, 7, 1024)
    assert served.given == {"timeout", "workers"} and merged.given == {"timeout", "workers"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        merged.workers = 5  # type: ignore[misc]


def test_the_largest_batch_is_what_one_message_can_carry():
    """A batch's response pipes travel to the worker in one message: the options' ceiling is the wire's."""
    from litkit.wire.protocol import MAX_FDS_PER_MESSAGE

    assert MAX_BATCH_SIZE == MAX_FDS_PER_MESSAGE


def test_ray_endpoints_follow_the_apis_own_options():
    """Regression (issue 22): ``ray_app`` ignored the options an API was made with
    (``MyAPI(api_path="/embed", stream=False)``), which ``serve()`` honours; the endpoints it
    deploys now follow them, and a path that disagrees with the API's is refused as by serve().
    (``endpoints_of`` names what ``ray_app`` deploys; it needs no Ray.)"""
    from litkit.ray.app import endpoints_of

    api = apis.Doubler()
    api.api_path = "/double"
    [endpoint] = endpoints_of(api)
    assert endpoint.path == "/double"
    with pytest.raises(ValueError, match=r"Doubler was made with api_path='/double' but is served at '/twice'; give the path in one place"):
        endpoints_of(api, api_path="/twice")
