"""The systems under test, their pinned versions, and the virtual environments the peers run in.

litkit and the raw Tornado handler run on this interpreter (litkit from this checkout, Tornado as
litkit uses it). LitServe and FastAPI each get their own virtual environment under
``benchmarks/.venvs/`` (git-ignored), created with pinned versions on first use, so that their
dependencies never touch the environment litkit is tested in. Both peers get the same web stack
(FastAPI, Starlette, uvicorn with uvloop and httptools), so the gap between them is LitServe's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VENVS = os.path.join(HERE, ".venvs")

_WEB_STACK = (
    "fastapi==0.165.0",
    "starlette==1.10.0",
    "pydantic==2.14.4",
    "uvicorn[standard]==0.54.0",
    "uvloop==0.23.0",
    "httptools==0.9.0",
)


@dataclass(frozen=True)
class System:
    name: str
    script: str
    requirements: tuple[str, ...] = ()  # empty: runs on this interpreter
    announces: bool = False  # prints a JSON line with its own `serve()` time once ready (litkit)

    @property
    def venv(self) -> str | None:
        return os.path.join(VENVS, self.name) if self.requirements else None

    @property
    def python(self) -> str:
        venv = self.venv
        return os.path.join(venv, "bin", "python") if venv else sys.executable

    def environment(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        if self.name == "litkit":
            env["PYTHONPATH"] = ROOT  # this checkout's litkit, in the app and in its workers
        return env

    def prepare(self, log=print) -> None:
        """Create the pinned virtual environment on first use (or when the pins changed)."""
        venv = self.venv
        if venv is None:
            return
        marker = os.path.join(venv, "bench-requirements.txt")
        wanted = "\n".join(self.requirements) + "\n"
        if os.path.exists(marker):
            with open(marker) as installed:
                if installed.read() == wanted:
                    return
        log(f"creating {venv} with {', '.join(self.requirements)} (once; takes a minute)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
        subprocess.run([self.python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *self.requirements], check=True)
        with open(marker, "w") as out:
            out.write(wanted)

    def version(self) -> str:
        """What is installed, e.g. ``litserve 0.2.19 (fastapi 0.165.0, uvicorn 0.54.0)``."""
        names = {"litkit": ["litkit", "tornado"], "tornado": ["tornado"], "litserve": ["litserve", "fastapi", "uvicorn"], "fastapi": ["fastapi", "uvicorn"]}[self.name]
        code = (
            "import importlib, importlib.metadata as m, sys\n"
            "def v(n):\n"
            "    try: return m.version(n)\n"
            "    except m.PackageNotFoundError: return importlib.import_module(n).__version__\n"
            f"print(' '.join(v(n) for n in {names!r}))"
        )
        output = subprocess.run([self.python, "-c", code], capture_output=True, text=True, env=self.environment(), check=True).stdout.split()
        main = f"{names[0]} {output[0]}"
        if self.name == "litkit":
            main += f" @ {_git_commit()}"
        rest = ", ".join(f"{name} {version}" for name, version in zip(names[1:], output[1:]))
        return f"{main} ({rest})" if rest else main


# The one line a litkit app changes to run under LitServe (the model benchmarks keep one class for both).
LITKIT_IMPORT = "import litkit as ls  # was: import litserve as ls"


def as_litserve(script: str, folder: str, name: str) -> str:
    """A copy of ``script`` in ``folder`` (as ``name``) with its ``LITKIT_IMPORT`` line changed back
    to ``import litserve as ls``; its path.

    Raises:
        RuntimeError: the script no longer has that line.
    """
    with open(script) as source:
        text = source.read()
    changed = text.replace(LITKIT_IMPORT, "import litserve as ls")
    if changed == text:
        raise RuntimeError(f"{script} no longer has the line {LITKIT_IMPORT!r}")
    path = os.path.join(folder, name)
    with open(path, "w") as out:
        out.write(changed)
    return path


def litserve_venv(venv: str, requirements: tuple[str, ...], no_deps: tuple[str, ...] = (), log=print) -> str:
    """LitServe's interpreter for a model benchmark, in the virtual environment ``venv`` made on first
    use (again when the wanted packages change): torch's CPU build first, so that nothing pulls a
    CUDA build, then ``requirements``, then ``no_deps`` without their own dependencies."""
    python = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, "bench-requirements.txt")
    wanted = "\n".join(("torch==2.13.0", *requirements, *(f"{package} --no-deps" for package in no_deps))) + "\n"
    if os.path.exists(marker) and open(marker).read() == wanted:
        return python
    log(f"creating {venv} (once; takes a few minutes)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True)
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, *requirements], check=True)
    if no_deps:
        subprocess.run([*pip, "--no-deps", *no_deps], check=True)
    with open(marker, "w") as out:
        out.write(wanted)
    return python


def _git_commit() -> str:
    result = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def _peer(name: str) -> str:
    return os.path.join(HERE, "peers", f"{name}_app.py")


SYSTEMS = {
    "litkit": System("litkit", _peer("litkit"), announces=True),
    "litserve": System("litserve", _peer("litserve"), ("litserve==0.2.19", "pyzmq==27.3.0", *_WEB_STACK)),
    "fastapi": System("fastapi", _peer("fastapi"), _WEB_STACK),
    "tornado": System("tornado", _peer("tornado")),
}
