"""The ``run`` fixture (imported by the test modules here): ``LitServer.run()`` on a thread, stopped and checked for leftovers after the test."""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator

import pytest

import litkit
import litkit as ls
from conftest import assert_no_children, litkit_threads, wait_until


@pytest.fixture
def run() -> Iterator[Callable[..., Any]]:
    """``run(LitServer(...), **run_options)``: LitServer.run on a thread; returns the litkit Server once it serves."""
    started: list[tuple[ls.LitServer, threading.Thread]] = []

    def start(lit_server: ls.LitServer, **options: Any) -> litkit.Server:
        options.setdefault("port", 0)
        options.setdefault("generate_client_file", False)
        errors: list[BaseException] = []

        def main() -> None:
            try:
                lit_server.run(**options)
            except BaseException as error:  # noqa: BLE001 - handed to the test
                errors.append(error)

        thread = threading.Thread(target=main, name="test-litserver-run")
        thread.start()
        started.append((lit_server, thread))
        wait_until(lambda: errors or (lit_server.server is not None and lit_server.server.state == "serving"), message="LitServer.run() to serve")
        if errors:
            raise errors[0]
        return lit_server.server

    yield start
    for lit_server, thread in started:
        if lit_server.server is not None:
            lit_server.server.stop()
        thread.join(10)
        assert not thread.is_alive(), "LitServer.run() did not return after its server stopped"
    assert_no_children()
    assert not litkit_threads()
