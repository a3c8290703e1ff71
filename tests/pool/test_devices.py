"""Devices: each worker sees only its GPU (CUDA_VISIBLE_DEVICES set before it starts) and setup()
receives its device string. Checked without a GPU through the environment each worker sees."""

from __future__ import annotations

import psutil
import pytest

import apis
import litkit
from litkit.pool.devices import find_cuda_devices


def _setups(events, count):
    return sorted((e["visible"], e["device"]) for e in events.wait_for("setup", count))


def test_cuda_workers_each_see_only_their_gpu_and_setup_gets_cuda_0(serve, events, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    server = serve(apis.DeviceReporter(events.path), accelerator="cuda", devices=2, workers_per_device=2)
    assert _setups(events, 4) == [("5", "cuda:0"), ("5", "cuda:0"), ("7", "cuda:0"), ("7", "cuda:0")]
    workers = server.status()["workers"]
    assert [w["device"] for w in workers] == ["cuda:0"] * 4
    # Set in the environment the interpreter started with, not later by litkit's code.
    assert sorted(psutil.Process(w["pid"]).environ()["CUDA_VISIBLE_DEVICES"] for w in workers) == ["5", "5", "7", "7"]
    assert server.predict({})["device"] == "cuda:0"


def test_a_devices_list_picks_gpus_by_position_among_the_visible_ones(serve, events, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaa,GPU-bbb,GPU-ccc")
    serve(apis.DeviceReporter(events.path), accelerator="cuda", devices=[2, 0])
    assert _setups(events, 2) == [("GPU-aaa", "cuda:0"), ("GPU-ccc", "cuda:0")]


def test_auto_serves_on_the_gpus_it_finds_with_workers_per_gpu(serve, events, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    serve(apis.DeviceReporter(events.path), workers=2)
    assert _setups(events, 2) == [("3", "cuda:0"), ("3", "cuda:0")]


def test_auto_without_a_gpu_serves_on_the_cpu_and_leaves_the_environment_alone(serve, events, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    server = serve(apis.DeviceReporter(events.path))
    assert _setups(events, 1) == [("", "cpu")]
    assert server.status()["workers"][0]["device"] == "cpu"


def _gpus_the_driver_lists() -> int:
    """Counted here the way a person would: the driver's folder, else ``nvidia-smi -L``, else none."""
    import os
    import shutil
    import subprocess

    if os.path.isdir("/proc/driver/nvidia/gpus"):
        return len(os.listdir("/proc/driver/nvidia/gpus"))
    if shutil.which("nvidia-smi"):
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        return sum(line.startswith("GPU ") for line in listing.stdout.splitlines())
    return 0


def test_auto_without_cuda_visible_devices_finds_the_gpus_the_driver_lists(serve, events, monkeypatch):
    """README: with ``accelerator="auto"`` litkit finds the GPUs without torch, also when
    ``CUDA_VISIBLE_DEVICES`` is not set: one worker per GPU the driver lists, each seeing only its
    own; on a machine without one (this suite's usual case) the workers serve on the CPU."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    count = _gpus_the_driver_lists()
    assert find_cuda_devices() == [str(i) for i in range(count)]
    serve(apis.DeviceReporter(events.path), workers=max(count, 1), workers_per_device=1)
    if count:
        assert _setups(events, count) == [(str(i), "cuda:0") for i in range(count)]
    else:
        assert _setups(events, 1) == [(None, "cpu")]


def test_accelerator_cpu_hides_the_gpus_from_the_workers(serve, events, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    serve(apis.DeviceReporter(events.path), accelerator="cpu", workers=2)
    assert _setups(events, 2) == [("", "cpu"), ("", "cpu")]


@pytest.mark.parametrize(
    "visible, options, message",
    [
        ("", {"accelerator": "cuda"}, "asks for CUDA GPUs, but none is visible"),
        ("", {"devices": 1}, "asks for CUDA GPUs, but none is visible"),
        ("0,1", {"accelerator": "cuda", "devices": [3]}, r"names GPU 3, but 2 CUDA GPUs are visible \(indices 0 to 1\)"),
        ("0,1", {"accelerator": "cuda", "devices": 3}, "devices=3 but 2 CUDA GPUs are visible"),
        ("0,1", {"accelerator": "cuda", "devices": [1, 1]}, "names a GPU twice"),
        ("0,1", {"accelerator": "cuda", "devices": []}, "devices must be None"),
        ("0,1", {"accelerator": "cpu", "devices": 1}, "picks CUDA GPUs, but accelerator='cpu'"),
        ("0,1", {"accelerator": "tpu"}, "accelerator must be one of 'auto', 'cpu', 'cuda'"),
        ("0,1", {"workers": 2, "workers_per_device": 3}, "workers=2 and workers_per_device=3 disagree"),
        ("0,1", {"workers_per_device": 0}, "workers_per_device must be an int from 1"),
    ],
)
def test_impossible_device_requests_fail_before_any_worker_starts(monkeypatch, visible, options, message):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    with pytest.raises(ValueError, match=message):
        litkit.serve(apis.DeviceReporter(), port=0, **options)
    assert not psutil.Process().children()


@pytest.mark.parametrize(
    "visible, expected",
    [("0,1", ["0", "1"]), (" 2 , 3 ", ["2", "3"]), ("0,-1,2", ["0"]), ("-1", []), ("", []), ("GPU-1a2b", ["GPU-1a2b"])],
)
def test_cuda_visible_devices_is_read_the_way_cuda_reads_it(monkeypatch, visible, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert find_cuda_devices() == expected


def test_a_real_gpu_worker_puts_its_model_on_its_own_device(serve):
    """Needs torch and a CUDA GPU; skipped elsewhere (no GPU was lent when this was written)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU visible to torch")
    count = torch.cuda.device_count()
    server = serve(apis.TorchDevice(), accelerator="cuda", devices=list(range(count)))
    answer = server.predict({"k": 3})
    assert answer["device"] == "cuda:0"
    assert answer["device_count"] == 1, "a worker must see only its own GPU"
    assert answer["sum"] == 6.0
