"""The package layout is the architecture: which folder may import which, no import circles, and
what each side loads at run time (docs/design.md, "Layers")."""

from __future__ import annotations

import ast
import functools
import pathlib
import subprocess
import sys

import pytest

import litkit

PACKAGE = pathlib.Path(litkit.__file__).parent

# The shared modules at the package's top: importable from both processes.
SHARED = {"api", "errors", "cancellation", "checks", "kernel", "options"}

# What each room may import of litkit (besides itself). A module at the top is its own room.
ALLOWED = {
    "shared": set(),
    "wire": {"shared"},
    "specs": {"shared"},
    # The LitAPI contract (how hooks are called, how answers are framed): every backend's, below them.
    "contract": {"shared", "wire"},
    "worker": {"shared", "wire", "specs", "contract"},
    "pool": {"shared", "wire"},
    "client": {"shared"},
    "server": {"shared", "wire", "specs", "contract", "worker", "pool", "client", "notebook", "package", "ray"},
    "notebook": {"shared"},
    "jupyter": {"shared", "wire"},  # the Jupyter server extension: reads servers' registrations (wire.registration)
    "front": {"shared", "specs", "server", "client", "package"},  # cli, demo, __main__
    "package": {"shared", "specs", "server", "client", "ray", "compat"},  # litkit/__init__.py: lazily, by name
    # Ray Serve: a peer of server/, never importing it; its handle's live view is in notebook/.
    "ray": {"shared", "wire", "specs", "contract", "client", "notebook"},
    # LitServe compatibility: LitServer over serve(), LitServe's specs, loggers and callbacks.
    "compat": {"shared", "specs", "contract", "pool", "server"},
    # LitServe's example APIs and schemas (ls.test_examples, litkit.schema.image): user code, so to speak.
    "test_examples": {"shared", "specs"},
    "schema": set(),
}

# Imports of these rooms are allowed only inside a function (loaded on first use, never at import).
LAZY_ONLY = {("server", "notebook"), ("server", "ray"), ("ray", "notebook"), ("package", "specs"), ("package", "server"), ("package", "client"), ("package", "ray"), ("package", "compat"), ("package", "test_examples"), ("package", "schema")}


def _room(module: str) -> str:
    """The room of a dotted module name under litkit ('' is the package itself)."""
    if module == "":
        return "package"
    head = module.split(".")[0]
    if head in SHARED:
        return "shared"
    if head in ("cli", "demo", "__main__"):
        return "front"
    return head


@functools.lru_cache(maxsize=None)
def _modules() -> dict[str, pathlib.Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(module: str, path: pathlib.Path) -> list[tuple[str, int, bool]]:
    """(imported module under litkit, line, at module level?) for every import in ``path``,
    TYPE_CHECKING blocks and function bodies included."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = top_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if module else []
                    base = base if is_package else base[:-1]
                    base = base[: len(base) - (child.level - 1)] if child.level > 1 else base
                    target = ".".join(base + ([child.module] if child.module else []))
                elif child.module and (child.module == "litkit" or child.module.startswith("litkit.")):
                    target = child.module[len("litkit.") :] if child.module != "litkit" else ""
                else:
                    continue
                modules = _modules()
                for name in (alias.name for alias in child.names):  # "from . import registry" imports a module
                    candidate = f"{target}.{name}" if target else name
                    found.append((candidate if candidate in modules else target, child.lineno, inner))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("litkit."):
                        found.append((alias.name[len("litkit.") :], child.lineno, inner))
            visit(child, inner)

    visit(tree, True)
    return found


def test_each_room_imports_only_the_rooms_below_it():
    wrong = []
    for module, path in _modules().items():
        room = _room(module)
        for target, line, top_level in _imports(module, path):
            target_room = _room(target)
            if target_room == room:
                continue
            if target_room not in ALLOWED[room]:
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} ({room}) imports litkit.{target} ({target_room})")
            elif (room, target_room) in LAZY_ONLY and top_level and not (room == "package" and _in_type_checking(path, line)):
                wrong.append(f"{path.relative_to(PACKAGE)}:{line} imports litkit.{target} at import time; it must load on first use")
    assert wrong == []


def _in_type_checking(path: pathlib.Path, line: int) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            if node.lineno <= line <= (node.end_lineno or node.lineno):
                return True
    return False


def test_there_is_no_import_circle():
    """No circle through any import: TYPE_CHECKING blocks and function-level imports count too."""
    modules = _modules()
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for module, path in modules.items():
        for target, _, _ in _imports(module, path):
            if target in modules and target != module and not _is_parent(target, module):
                graph[module].add(target)
    circles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def search(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                search(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            search(module)
    assert circles == []


def _is_parent(package: str, module: str) -> bool:
    """Importing a name from one's own package's ``__init__`` (``from .. import __version__``) runs
    that package first anyway; it is no circle of the modules' own making."""
    return package == "" or module.startswith(package + ".")


def _loaded_after(code: str, watched: tuple[str, ...]) -> list[str]:
    script = f"import sys\n{code}\nprint(sorted(m for m in {watched!r} if m in sys.modules))"
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True).stdout
    return ast.literal_eval(output.strip())


HEAVY = ("tornado", "ipywidgets", "IPython", "litkit.server", "litkit.pool", "litkit.notebook", "litkit.client", "ray", "litkit.ray", "litkit.jupyter", "jupyter_server", "litkit.compat", "pydantic", "fastapi", "anywidget")


def test_import_litkit_loads_neither_tornado_nor_ipywidgets():
    assert _loaded_after("import litkit", HEAVY) == []


@pytest.mark.parametrize(
    "code",
    [
        "import litkit.worker.main, litkit.worker.batch, litkit.worker.async_loop, litkit.worker.timeslice",
        "import litkit.wire.protocol, litkit.wire.encoding",
        "import litkit.contract.hooks, litkit.contract.answer, litkit.contract.batching, litkit.contract.framing, litkit.contract.callbacks",
        "import litkit.specs",
    ],
)
def test_the_worker_side_loads_neither_the_server_side_nor_its_stacks(code):
    assert _loaded_after(code, HEAVY) == []


def test_the_pool_runs_on_asyncio_without_tornado():
    assert _loaded_after("import litkit.pool.pool", ("tornado", "ipywidgets", "litkit.server", "litkit.notebook")) == []


def test_the_server_side_loads_the_notebook_side_only_for_a_dashboard():
    loaded = _loaded_after("import litkit.server, litkit.cli", ("ipywidgets", "IPython", "litkit.notebook"))
    assert loaded == []


def test_the_server_side_and_the_command_line_load_ray_only_for_backend_ray():
    assert _loaded_after("import litkit, litkit.server, litkit.cli, litkit.ray", ("ray", "starlette")) == []


def test_the_ray_side_loads_the_notebook_side_only_for_its_view():
    assert _loaded_after("import litkit.ray, litkit.ray.serving", ("ipywidgets", "IPython", "litkit.notebook")) == []


def test_the_server_side_never_loads_the_jupyter_extension():
    """A kernel's server only writes its registration file; the extension runs in the Jupyter server."""
    assert _loaded_after("import litkit.server, litkit.cli", ("litkit.jupyter", "jupyter_server")) == []


def test_finding_the_extension_loads_no_server_side():
    """jupyter_server imports litkit.jupyter to find its extension points: that loads neither the
    serving side nor, until the extension loads, jupyter_server's handlers."""
    loaded = _loaded_after("import litkit.jupyter; litkit.jupyter._jupyter_server_extension_points()", ("litkit.server", "litkit.pool", "litkit.jupyter.relay"))
    assert loaded == []


MAX_MODULE_LINES = 450  # issue 22: small modules, one concept each


def test_no_module_is_over_450_lines():
    """Regression (issue 22): relay.py had 686 lines, host.py 656, server.py 588, pool.py and
    endpoints.py 541; each module stays small enough to hold one concept."""
    long = {
        str(path.relative_to(PACKAGE)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"modules over {MAX_MODULE_LINES} lines (split them by concept): {long}"
