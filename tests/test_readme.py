"""The README's code runs as written: every ``python`` block in a fresh interpreter, ``app.py`` as a
script and under ``litkit serve``. A block that cannot run (fragments, GPUs) says why in an HTML
comment right above it, ``<!-- not run by tests/test_readme.py: REASON -->``."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from conftest import without_startup_progress
from helpers import HTTP_TIMEOUT_S, assert_clean_stop, litkit_command, running

README = Path(__file__).resolve().parent.parent / "README.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_NOT_RUN = re.compile(r"<!-- not run by tests/test_readme\.py: (?P<reason>[^>]+?) -->\s*$", re.DOTALL)
_RUN_TIMEOUT_S = 120  # fresh interpreters, workers included, on 2 busy cores


@dataclass
class Block:
    language: str
    code: str
    line: int
    not_run: str | None  # why, when the block is not run

    @property
    def name(self) -> str:
        return f"README.md:{self.line}"


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for match in _FENCE.finditer(text):
        before = _NOT_RUN.search(text, max(0, match.start() - 400), match.start())
        blocks.append(Block(match.group(1), match.group(2), text.count("\n", 0, match.start()) + 1, before.group("reason") if before else None))
    return blocks


def _is_app_py(block: Block) -> bool:
    return block.code.startswith("# app.py")


PYTHON = [b for b in readme_blocks() if b.language == "python" and b.not_run is None and not _is_app_py(b)]


def test_every_python_block_is_run_or_says_why_not():
    python = [b for b in readme_blocks() if b.language == "python"]
    assert len(PYTHON) >= 4 and sum(map(_is_app_py, python)) == 1
    assert [b.name for b in python if b.not_run is not None] == [b.name for b in python if b not in PYTHON and not _is_app_py(b)]
    for block in python:
        if block.not_run is not None:
            assert len(block.not_run.split()) >= 3, f"{block.name} needs a reason for not being run"


@pytest.mark.parametrize("block", PYTHON, ids=[b.name for b in PYTHON])
def test_a_python_block_runs_as_written(block: Block, tmp_path: Path):
    """Each block alone, in a fresh interpreter: a snippet that needs another's names, or clashes with
    another's port, fails here (issue 14: the README's snippets did both)."""
    result = subprocess.run([sys.executable, "-c", block.code], cwd=tmp_path, capture_output=True, text=True, timeout=_RUN_TIMEOUT_S)
    assert result.returncode == 0, f"{block.name} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr


def test_the_streaming_block_prints_its_chunks(tmp_path: Path):
    block = next(b for b in PYTHON if "class Tokens" in b.code)
    result = subprocess.run([sys.executable, "-c", block.code], cwd=tmp_path, capture_output=True, text=True, timeout=_RUN_TIMEOUT_S)
    assert without_startup_progress(result.stdout.splitlines()) == ["{'token': 'one'}", "{'token': 'two'}", "{'token': 'three'}"], result.stderr


def test_app_py_runs_as_a_script_and_under_litkit_serve(tmp_path: Path):
    app_block = next(b for b in readme_blocks() if _is_app_py(b))
    (tmp_path / "app.py").write_text(app_block.code)
    with running([sys.executable, "app.py"], cwd=tmp_path) as server:
        endpoint = server.wait_for_banner()
        assert endpoint == "http://127.0.0.1:8000/predict"
        assert requests.post(endpoint, json={"a": 1}, timeout=HTTP_TIMEOUT_S).json() == {"echo": {"a": 1}}
        assert_clean_stop(server, signal.SIGINT)
    commands = next(b for b in readme_blocks() if b.language == "bash" and "litkit serve app.py:Echo" in b.code)
    first = commands.code.splitlines()[0].split("#")[0]
    words = shlex.split(first)
    assert words[:2] == ["litkit", "serve"], first
    with running([*litkit_command(), *words[1:]], cwd=tmp_path) as server:
        endpoint = server.wait_for_banner()
        assert len(server.record_children()) == int(words[words.index("--workers") + 1])
        assert requests.post(endpoint, json={"a": 2}, timeout=HTTP_TIMEOUT_S).json() == {"echo": {"a": 2}}
        assert_clean_stop(server, signal.SIGTERM)


def test_the_logging_section_names_the_loggers_litkit_logs_to():
    """README's Logging section named ``litkit.access``, a logger nothing logs to (the access lines
    go to ``litkit.server.access``): every name it gives must be one the code logs to, and every
    one the server side logs to must be forwarded from the server's interpreter or process."""
    from litkit.server.host import _LOGGERS

    section = README.read_text().split("## Logging", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(litkit(?:\.\w+)*)`", section))
    source = "\n".join(path.read_text() for path in (README.parent / "litkit").rglob("*.py"))
    used = set(re.findall(r'getLogger\("(litkit[\w.]*)"\)', source))
    assert named and named <= used, f"README names loggers nothing logs to: {sorted(named - used)}"
    server_side = {name for name in used if name.split(".")[1:2] and name.split(".")[1] in ("server", "pool", "worker")}
    assert server_side <= set(_LOGGERS), f"not forwarded from the server: {sorted(server_side - set(_LOGGERS))}"
