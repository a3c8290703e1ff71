"""A real Jupyter server for the tests of litkit's Jupyter route: ``python -m jupyter_server`` on
port 0 with a token, in its own session and temporary folders, with litkit's extension enabled by
the very file litkit installs (``jupyter-config/jupyter_server_config.d/litkit.json``, found through
``JUPYTER_CONFIG_PATH`` as an installed copy is found in ``<prefix>/etc/jupyter``), and a kernel it
started, reached with jupyter_client as a notebook's front end reaches it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest
import requests

from conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
START_S = 60.0  # a Jupyter server and a kernel on two busy cores
HTTP_TIMEOUT_S = 10.0


class JupyterServer:
    """A running Jupyter server: ``url`` (with its base_url, ending in ``/``), ``token``, ``port``."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, token: str, runtime: Path, log: Path) -> None:
        self.process = process
        self.url = url
        self.token = token
        self.runtime = runtime
        self.log = log
        self.port = int(url.split(":")[2].split("/")[0])
        self.base_path = "/" + url.split("/", 3)[3]

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def start_kernel(self) -> "Kernel":
        answer = requests.post(self.url + "api/kernels", json={"name": "python3"}, headers=self.auth(), timeout=HTTP_TIMEOUT_S)
        answer.raise_for_status()
        kernel_id = answer.json()["id"]
        return Kernel(self, kernel_id, str(self.runtime / f"kernel-{kernel_id}.json"))

    def read_log(self) -> str:
        return self.log.read_text(errors="replace")


class Kernel:
    """A kernel the Jupyter server started; ``run(code)`` executes a cell and returns its stdout."""

    def __init__(self, server: JupyterServer, kernel_id: str, connection_file: str) -> None:
        from jupyter_client.blocking import BlockingKernelClient

        self.server = server
        self.kernel_id = kernel_id
        wait_until(lambda: os.path.exists(connection_file), START_S, "the kernel's connection file")
        self.client = BlockingKernelClient(connection_file=connection_file)
        self.client.load_connection_file()
        self.client.start_channels()
        try:
            self._wait_for_ready()
            self.pid = self.run("import os; print(os.getpid())").strip()
        except BaseException:
            self.client.stop_channels()  # its ZMQ threads and sockets would outlive the failed test
            raise

    def _wait_for_ready(self) -> None:
        """Until the kernel answers kernel_info on the shell and IOPub delivers (the reply's status).

        jupyter_client's ``wait_for_ready()`` takes a kernel that has not answered a heartbeat yet
        for a dead one when the client has no kernel manager, as here: with ipykernel 6, a kernel
        still starting failed it within 2 s ("Kernel died before replying to kernel_info").
        """
        deadline = time.monotonic() + START_S
        while True:
            self.client.kernel_info()
            try:
                replied = self.client.get_shell_msg(timeout=1)["msg_type"] == "kernel_info_reply"
                self.client.get_iopub_msg(timeout=0.5)  # IOPub is connected: a cell's output will arrive
                if replied:
                    break
            except queue.Empty:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the kernel did not answer kernel_info within {START_S:g}s:\n{self.server.read_log()[-3000:]}")
        for _ in range(1000):  # the attempts' status messages, before any cell's (a few)
            try:
                self.client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                break

    def run(self, code: str, timeout: float = START_S) -> str:
        output: list[str] = []
        errors: list[str] = []

        def hook(message: dict[str, Any]) -> None:
            content = message["content"]
            if message["msg_type"] == "stream":
                output.append(content["text"])
            elif message["msg_type"] == "error":
                errors.append("\n".join(content["traceback"]))

        reply = self.client.execute_interactive(code, timeout=timeout, output_hook=hook)
        if reply["content"]["status"] != "ok" or errors:
            pytest.fail(f"the cell failed:\n{code}\n{''.join(errors)}")
        return "".join(output)

    def shutdown(self) -> None:
        self.client.stop_channels()
        requests.delete(self.server.url + f"api/kernels/{self.kernel_id}", headers=self.server.auth(), timeout=HTTP_TIMEOUT_S)


@contextlib.contextmanager
def jupyter_server(folder: Path, base_url: str = "/", environ: dict[str, str] | None = None) -> Iterator[JupyterServer]:
    """Start a Jupyter server serving ``folder``; stop it and everything it started on the way out."""
    token = secrets.token_hex(16)
    runtime = folder / "runtime"
    env = dict(os.environ, **(environ or {}))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    env["JUPYTER_CONFIG_PATH"] = str(ROOT / "jupyter-config")
    for variable, name in (("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_CONFIG_DIR", "config")):
        env[variable] = str(folder / name)
    log = folder / "jupyter-server.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "jupyter_server", "--no-browser", "--ServerApp.ip=127.0.0.1", "--ServerApp.port=0",
                "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}",
                f"--ServerApp.base_url={base_url}", "--ServerApp.allow_root=True",
            ],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=folder, start_new_session=True,
        )
    try:
        info = wait_until(lambda: _server_info(runtime, process), START_S, "the Jupyter server's runtime file")
        server = JupyterServer(process, info["url"], token, runtime, log)
        wait_until(lambda: _answers(server), START_S, "the Jupyter server to answer")
        yield server
    except BaseException:
        print("the Jupyter server's log:\n" + log.read_text(errors="replace")[-5000:])
        raise
    finally:
        _stop_process_tree(process)


def _server_info(runtime: Path, process: subprocess.Popen[bytes]) -> dict[str, Any] | None:
    if process.poll() is not None:
        pytest.fail(f"the Jupyter server exited with {process.returncode}")
    for path in glob.glob(str(runtime / f"jpserver-{process.pid}.json")):
        try:
            with open(path) as file:
                return json.load(file)
        except ValueError:
            return None  # half written
    return None


def _answers(server: JupyterServer) -> bool:
    try:
        return requests.get(server.url + "api/status", headers=server.auth(), timeout=HTTP_TIMEOUT_S).status_code == 200
    except requests.RequestException:
        return False


def _stop_process_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the Jupyter server (it shuts its kernels down, whose litkit servers stop their
    workers); whatever of its tree outlives it by 5 s is killed and fails the test."""
    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
    _, alive = psutil.wait_procs(tree, timeout=5)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    assert not alive, f"the Jupyter server's processes outlived it: {alive}"
