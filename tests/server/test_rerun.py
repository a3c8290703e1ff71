"""Re-running serve() on a port this process serves replaces the server without a gap (issue 24).

Before, serve() stopped the old server and then started the new one: a client calling without
pause saw connections refused, resets, 503s and streams cut short while the cell re-ran. Now
the new version starts beside the old one on the same listener; these tests call the server
from four threads (JSON and streams, each over one keep-alive connection and over a new
connection per request) across a re-run and require no error at all.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import socket
import threading
import time
from typing import Any

import psutil
import pytest

import apis
import litkit
from litkit.server.registry import stop_all
from conftest import DEADLINE_S, ChunkReader, assert_no_children, assert_nothing_at_error, litkit_threads, wait_until

ENDPOINTS = ("/json", "/stream")
CHUNKS = 20


def _versions(version: int, setup_delay: float = 0.0) -> dict[str, litkit.LitAPI]:
    return {"/json": apis.Versioned(version, setup_delay), "/stream": apis.VersionedStream(version, setup_delay, chunks=CHUNKS)}


class ClientLoop:
    """Four threads calling a server without pause until ``stop()``: each endpoint over one
    keep-alive connection and over a new connection per request. Every answer is kept as
    (thread, sent at, answered at, version, worker pid or None); whatever went wrong goes to ``errors``."""

    def __init__(self, url: str, paths: tuple[str, ...] = ENDPOINTS) -> None:
        self.host, port = url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)
        self.answers: list[tuple[str, float, float, int, int | None]] = []
        self.errors: list[str] = []
        self._done = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(path, keep_alive), name=f"client {path} {'keep-alive' if keep_alive else 'new connections'}")
            for path in paths
            for keep_alive in (True, False)
        ]

    def start(self) -> ClientLoop:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(DEADLINE_S)
        assert not any(thread.is_alive() for thread in self._threads), "a client thread is stuck"

    def answered(self, after: float = 0.0, version: int | None = None, finished_after: float = 0.0) -> dict[str, int]:
        """Answers per thread of requests sent after ``after`` (answered by ``version``, after ``finished_after``)."""
        counts = {thread.name: 0 for thread in self._threads}
        for name, sent, finished, answered_by, _ in list(self.answers):
            if sent > after and finished > finished_after and version in (None, answered_by):
                counts[name] += 1
        return counts

    def _run(self, path: str, keep_alive: bool) -> None:
        name = threading.current_thread().name
        connection: http.client.HTTPConnection | None = None
        while not self._done.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=DEADLINE_S)
            sent = time.monotonic()
            try:
                connection.request("POST", path, body=b'{"n": 1}', headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                body = response.read()  # IncompleteRead if a stream is cut short
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}: {body[:200]!r}")
                self.answers.append((name, sent, time.monotonic(), *self._check(path, body)))
            except Exception as error:  # noqa: BLE001 - every failure is what the test looks for
                self.errors.append(f"{name}: {type(error).__name__}: {error}")
                connection.close()
                connection = None
                continue
            if not keep_alive:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()

    @staticmethod
    def _check(path: str, body: bytes) -> tuple[int, int | None]:
        """(version, worker pid) of one answer; a stream must be whole and of one version."""
        if path == "/json":
            answer = json.loads(body)
            return answer["version"], answer["pid"]
        chunks = [json.loads(line) for line in body.splitlines()]
        if [chunk.get("index") for chunk in chunks] != list(range(CHUNKS)) or len({chunk["version"] for chunk in chunks}) != 1:
            raise RuntimeError(f"a stream that is not whole, or of two versions: {chunks}")
        return chunks[0]["version"], None


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _describe(fds: set[str]) -> list[str]:
    """What each of ``fds`` is, for a failure's message."""
    described = []
    for fd in sorted(fds):
        try:
            described.append(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            described.append(f"{fd} (closed since)")
    return described


def test_a_rerun_on_the_same_port_drops_no_request_and_old_requests_finish_on_the_old_version(tmp_path, caplog):
    """Four clients call without pause while serve() runs again on the port with new code: no
    error, every stream whole; a stream running and requests queued behind it on the old
    version at the switch finish there; every request sent after serve() returned is answered
    by the new version; the old workers stop; and nothing is left once the server stops."""
    caplog.set_level(logging.INFO, logger="litkit")
    baseline_fds = _open_fds()
    first = litkit.serve(_versions(1), port=0)
    loop = ClientLoop(first.url)
    try:
        loop.start()
        wait_until(lambda: min(loop.answered().values()) >= 5, message="every client thread to be answered 5 times")
        # A stream held half-way on the old version across the whole re-run, with the stream
        # threads' requests queued behind it (the endpoint has one worker).
        gate = tmp_path / "go"
        held = litkit.Client(first.url).stream({"wait_for": str(gate)}, path="/stream")
        assert next(held) == {"version": 1, "index": 0}
        rerun_began = time.monotonic()
        second = litkit.serve(_versions(2, setup_delay=0.5), port=first.port)
        returned = time.monotonic()
        old_in_flight = second.status()["versions"]
        gate.touch()
        assert [chunk["version"] for chunk in held] == [1] * (CHUNKS - 1)
        wait_until(lambda: min(loop.answered(after=returned).values()) >= 5, message="every client thread to be answered 5 times after the re-run")
        loop.stop()

        assert loop.errors == []
        assert (first.state, second.state, second.url) == ("replaced", "serving", first.url)
        assert [v["version"] for v in old_in_flight] == [2, 1] and old_in_flight[1]["state"] == "draining"
        # The held stream, a request of each stream thread queued behind it, and those of the JSON
        # threads that reached the old version just before the switch.
        assert 3 <= old_in_flight[1]["in_flight"] <= 5
        answered_while_starting = loop.answered(after=rerun_began, version=1)
        assert answered_while_starting["client /json keep-alive"] >= 1 and answered_while_starting["client /json new connections"] >= 1, "the old version stopped answering while the new one started"
        queued_then_answered = loop.answered(version=1, finished_after=returned)
        assert queued_then_answered["client /stream keep-alive"] == queued_then_answered["client /stream new connections"] == 1
        assert sum(loop.answered(after=returned, version=1).values()) == 0, "a request sent after serve() returned reached the old version"
        old_pids = {pid for _, _, _, version, pid in loop.answers if version == 1 and pid is not None}
        wait_until(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in old_pids), message="the old version's workers to stop")
        status = wait_until(lambda: (lambda s: s if len(s["versions"]) == 1 else None)(second.status()), message="the old version to retire")
        assert status["version"] == 2 and {w["version"] for w in status["workers"]} == {2}
        recent = {r["id"]: r["version"] for r in status["recent"]}
        assert 2 in recent.values() and set(recent.values()) <= {1, 2}
        assert status["counts"]["completed"] == len(loop.answers) + 1  # the held stream too
        assert status["counts"]["failed"] == status["counts"]["cancelled"] == 0
    finally:
        loop.stop()
        stop_all()
    assert_nothing_at_error(caplog)
    assert_no_children()
    assert not litkit_threads()
    wait_until(lambda: not (_open_fds() - baseline_fds), deadline_s=5, message=f"the server's descriptors to close: {_describe(_open_fds() - baseline_fds)}")


@pytest.mark.parametrize(
    ("how", "options", "reason"),
    [
        ("raise", {}, "setup('cpu') raised RuntimeError: model weights not found"),
        ("exit", {}, "exited with code 3"),
        ("hang", {"start_timeout": 1}, "no READY within start_timeout=1s"),
    ],
)
def test_a_new_version_that_fails_to_start_leaves_the_old_one_serving(how, options, reason):
    """setup() raising, a worker dying, or start_timeout passing in the new version: serve()
    raises WorkerStartError saying the old version goes on serving, and it does, undisturbed."""
    server = litkit.serve({"/json": apis.Versioned(1)}, port=0)
    loop = ClientLoop(server.url, paths=("/json",)).start()
    try:
        wait_until(lambda: min(loop.answered().values()) >= 3, message="the clients to be answered")
        with pytest.raises(litkit.WorkerStartError) as raised:
            litkit.serve({"/json": apis.FailingSetup(how)}, port=server.port, **options)
        failed_at = time.monotonic()
        message = str(raised.value)
        assert reason in message and f"the previous version goes on serving at {server.url}" in message
        wait_until(lambda: min(loop.answered(after=failed_at).values()) >= 3, message="the clients to be answered after the failed re-run")
        loop.stop()
        assert loop.errors == []
        assert {version for _, _, _, version, _ in loop.answers} == {1}
        assert server.state == "serving"
        status = server.status()
        assert status["versions"] == [{"version": 1, "state": "serving", "in_flight": status["versions"][0]["in_flight"]}]
        assert [w["state"] for w in status["workers"]] in (["idle"], ["busy"])
        # The port is still this server's: the next good version replaces it as usual.
        third = litkit.serve({"/json": apis.Versioned(3)}, port=server.port)
        assert third.predict({"n": 1}, path="/json")["version"] == 3
    finally:
        loop.stop()
        stop_all()
    assert_no_children()
    assert not litkit_threads()


def test_an_auto_api_key_survives_a_rerun_and_a_new_host_takes_a_new_listener():
    """api_key='auto' keeps the key its callers hold across a re-run; a re-run that changes the
    host cannot keep the listener: it stops the old server first, and serves on the same port."""
    first = litkit.serve(apis.Versioned(1), port=0, api_key="auto")
    try:
        second = litkit.serve(apis.Versioned(2), port=first.port, api_key="auto")
        assert second.api_key == first.api_key
        assert litkit.Client(first.url, api_key=first.api_key).predict({})["version"] == 2
        third = litkit.serve(apis.Versioned(3), port=first.port, host="localhost", api_key="auto")
        assert (second.state, third.port, third.url) == ("replaced", first.port, f"http://localhost:{first.port}")
        assert third.predict({})["version"] == 3
        assert third.status()["version"] == 1  # a new server: its own history
    finally:
        stop_all()
    assert_no_children()


def test_stopping_while_the_old_version_still_streams_ends_both_and_leaves_nothing(tmp_path):
    """stop() right after a re-run, with a stream still running on the old version: the stream
    ends with the server's final error line (as at any stop), and no worker of either version,
    thread or descriptor is left."""
    baseline_fds = _open_fds()
    first = litkit.serve({"/stream": apis.VersionedStream(1)}, port=0)
    try:
        held = litkit.Client(first.url).stream({"wait_for": str(tmp_path / "never")}, path="/stream")
        assert next(held) == {"version": 1, "index": 0}
        second = litkit.serve({"/stream": apis.VersionedStream(2)}, port=first.port)
        assert [v["state"] for v in second.status()["versions"]] == ["serving", "draining"]
        second.stop()
        with pytest.raises(litkit.HTTPError, match="the server stopped before this request finished"):
            list(held)
        assert second.status()["state"] == "stopped" and {w["state"] for w in second.status()["workers"]} == {"stopped"}
    finally:
        stop_all()
    assert_no_children()
    assert not litkit_threads()
    wait_until(lambda: not (_open_fds() - baseline_fds), deadline_s=5, message=f"the server's descriptors to close: {_describe(_open_fds() - baseline_fds)}")


def test_a_request_whose_body_arrives_after_the_switch_goes_to_the_new_version():
    """Regression (seen once in the --reload test under load): a request routed to the old
    version by its headers, whose body came after the switch, found that version retired and got
    503 'the server is stopping'. A request is taken when its body is whole: by the new version."""
    first = litkit.serve({"/json": apis.Versioned(1)}, port=0)
    try:
        host, port = first.url.removeprefix("http://").rsplit(":", 1)
        body = b'{"n": 1}'
        sock = socket.create_connection((host, int(port)), timeout=DEADLINE_S)
        sock.sendall(f"POST /json HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        second = litkit.serve({"/json": apis.Versioned(2)}, port=first.port)
        wait_until(lambda: len(second.status()["versions"]) == 1, message="the old version to retire")
        sock.sendall(body)
        reader = ChunkReader(sock)
        assert reader.status == 200, reader.status_line
        assert json.loads(reader.body())["version"] == 2
        reader.close()
        sock.close()
    finally:
        stop_all()
    assert_no_children()
