"""The file a litkit server writes for litkit's Jupyter route (``litkit.wire.registration``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from litkit.wire.registration import (
    REGISTRY_ENV, ROUTE_ENV, Registration, read_registration, registration_path, remove_registration, route_and_registry, write_registration,
)


def test_a_registration_reads_back_and_leaves_no_temporary_file(tmp_path: Path):
    registration = Registration(8123, 4242, "http://127.0.0.1:8123")
    path = write_registration(str(tmp_path), registration)
    assert path == registration_path(str(tmp_path), 8123) == str(tmp_path / "8123.json")
    assert read_registration(str(tmp_path), 8123) == registration
    assert os.listdir(tmp_path) == ["8123.json"]


def test_missing_or_malformed_registrations_are_none(tmp_path: Path):
    assert read_registration(str(tmp_path), 8123) is None
    for content in ("not json", "[]", json.dumps({"port": 9999, "pid": 1, "url": "u"}), json.dumps({"port": 8123, "pid": True, "url": "u"}), json.dumps({"port": 8123, "pid": 5})):
        (tmp_path / "8123.json").write_text(content)
        assert read_registration(str(tmp_path), 8123) is None, content


def test_only_the_process_that_registered_a_port_removes_its_registration(tmp_path: Path):
    write_registration(str(tmp_path), Registration(8123, 4242, "http://127.0.0.1:8123"))
    remove_registration(str(tmp_path), 8123, pid=4343)  # another server has the port now
    assert read_registration(str(tmp_path), 8123) is not None
    remove_registration(str(tmp_path), 8123, pid=4242)
    assert read_registration(str(tmp_path), 8123) is None
    remove_registration(str(tmp_path), 8123, pid=4242)  # gone already: nothing to do


def test_the_route_and_registry_come_from_the_extension_s_environment():
    assert route_and_registry({}) is None
    assert route_and_registry({ROUTE_ENV: "/user/ada/litkit/"}) is None
    assert route_and_registry({ROUTE_ENV: "/user/ada/litkit/", REGISTRY_ENV: "/run/x"}) == ("/user/ada/litkit", "/run/x")
