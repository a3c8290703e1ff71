"""litkit.timeslice: the server thread and the workers run with a longer time slice than the
kernel's default, so the tasks they serve preempt them; LITKIT_SLICE_MS sets it or turns it off."""

from __future__ import annotations

import threading

import pytest

import apis
from conftest import server_loop_thread_id, wait_until
import litkit
from litkit.worker import timeslice

kernel_slices = pytest.mark.skipif(
    timeslice.current_slice_ms() is None, reason="the kernel does not report time slices (Linux 6.12+ does)"
)


def test_the_slice_comes_from_litkit_slice_ms_or_the_default():
    assert timeslice.slice_ms_from_environment({}) == timeslice.SLICE_MS
    assert timeslice.slice_ms_from_environment({"LITKIT_SLICE_MS": " 2.5 "}) == 2.5
    assert timeslice.slice_ms_from_environment({"LITKIT_SLICE_MS": "0"}) == 0


@pytest.mark.parametrize("text, says", [("fast", "is not a number"), ("500", "outside the 0.1-100 ms"), ("-1", "outside")])
def test_a_bad_litkit_slice_ms_names_the_value_and_what_to_give(text, says):
    with pytest.raises(ValueError, match=says) as raised:
        timeslice.slice_ms_from_environment({"LITKIT_SLICE_MS": text})
    assert repr(text) in str(raised.value) and "0 to keep the kernel's slice" in str(raised.value)


def test_serve_refuses_a_bad_litkit_slice_ms_before_starting_anything(monkeypatch):
    monkeypatch.setenv("LITKIT_SLICE_MS", "fast")
    with pytest.raises(ValueError, match="LITKIT_SLICE_MS='fast'"):
        litkit.serve(apis.Echo(), port=0)


def worker_pid(server):
    (pid,) = {worker["pid"] for worker in server.status()["workers"]}
    return pid


@kernel_slices
def test_the_server_thread_has_the_longer_slice_its_workers_start_with_the_kernels(serve):
    default = timeslice.current_slice_ms()
    server = serve(apis.Echo(), workers=2)
    assert timeslice.current_slice_ms(server_loop_thread_id(server)) == timeslice.SLICE_MS
    for worker in server.status()["workers"]:
        assert timeslice.current_slice_ms(worker["pid"]) == default  # not inherited: a waking worker waits less
    assert timeslice.current_slice_ms() == default  # the notebook's own thread is left alone


@kernel_slices
def test_a_worker_streams_with_the_longer_slice_and_takes_its_own_back_after(serve):
    default = timeslice.current_slice_ms()
    server = serve(apis.Ticker())
    pid = worker_pid(server)
    chunks = server.stream({"interval": 0.05, "n": 100})
    assert next(iter(chunks)) == {"i": 0}
    assert timeslice.current_slice_ms(pid) == timeslice.SLICE_MS
    chunks.close()  # the client leaves: the stream ends
    wait_until(lambda: timeslice.current_slice_ms(pid) == default, message="the worker's own slice back")
    assert list(server.stream({"interval": 0, "n": 3})) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert timeslice.current_slice_ms(pid) == default


@kernel_slices
def test_litkit_slice_ms_other_than_zero_is_the_slice_applied(serve, monkeypatch):
    """README: ``LITKIT_SLICE_MS`` sets another length; the server thread and a streaming worker
    take that one (7 ms here), not the default."""
    monkeypatch.setenv("LITKIT_SLICE_MS", "7")
    assert timeslice.SLICE_MS != 7
    default = timeslice.current_slice_ms()
    server = serve(apis.Ticker())
    pid = worker_pid(server)
    assert timeslice.current_slice_ms(server_loop_thread_id(server)) == 7
    chunks = server.stream({"interval": 0.05, "n": 100})
    assert next(iter(chunks)) == {"i": 0}
    assert timeslice.current_slice_ms(pid) == 7
    chunks.close()
    wait_until(lambda: timeslice.current_slice_ms(pid) == default, message="the worker's own slice back")


@kernel_slices
def test_litkit_slice_ms_zero_leaves_the_kernels_slice(serve, monkeypatch):
    monkeypatch.setenv("LITKIT_SLICE_MS", "0")
    default = timeslice.current_slice_ms()
    server = serve(apis.Ticker())
    pid = worker_pid(server)
    chunks = server.stream({"interval": 0.05, "n": 100})
    assert next(iter(chunks)) == {"i": 0}
    assert timeslice.current_slice_ms(server_loop_thread_id(server)) == default
    assert timeslice.current_slice_ms(pid) == default
    chunks.close()


@kernel_slices
def test_a_slice_already_longer_is_kept():
    seen = {}

    def thread():
        seen["set"] = timeslice.set_slice_ms(8.0)
        seen["lengthened"] = timeslice.lengthen_slice(2.0)  # shorter than what it has: nothing changes
        seen["slice"] = timeslice.current_slice_ms()

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join(10)
    assert seen == {"set": True, "lengthened": True, "slice": 8.0}
