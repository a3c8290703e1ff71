"""One owner for each piece of a request's bookkeeping (docs/design.md, "Who owns a request's
bookkeeping"): a request's record changes only through ``RequestTracker``, and only the pool closes
a job's response pipe. Read from the source, as tests/test_layout.py reads the imports."""

from __future__ import annotations

import ast
import pathlib

import litkit
from litkit.pool.tracking import RequestRecord

PACKAGE = pathlib.Path(litkit.__file__).parent
TRACKING = PACKAGE / "pool" / "tracking.py"
POOL = PACKAGE / "pool"


def _modules() -> list[tuple[str, ast.Module]]:
    return [(str(path.relative_to(PACKAGE)), ast.parse(path.read_text(encoding="utf-8"))) for path in sorted(PACKAGE.rglob("*.py"))]


def _names_a_record(node: ast.expr) -> bool:
    """``record``, ``self._record``, ``job.record``: an expression that, by its name, is a request's record."""
    if isinstance(node, ast.Name):
        return node.id.lstrip("_").endswith("record")
    if isinstance(node, ast.Attribute):
        return node.attr.lstrip("_").endswith("record")
    return False


def test_only_the_tracker_assigns_a_records_fields():
    """Regression (issue 22, "one owner for each piece of a request's bookkeeping"): admission.py set
    ``record.arrived``, answers.py counted ``record.chunks += 1`` and set ``first_chunk_at`` on the
    job's record, beside the tracker's own changes; each change is now a ``RequestTracker`` method."""
    fields = set(RequestRecord.__slots__)
    found = []
    for name, tree in _modules():
        if PACKAGE / name == TRACKING:
            continue
        for node in ast.walk(tree):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = list(node.targets)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr in fields and _names_a_record(target.value):
                    found.append(f"{name}:{node.lineno}: {ast.unparse(target)}")
    assert found == [], f"a request's record changed outside RequestTracker (add a tracker method instead): {found}"


def test_only_the_pool_closes_a_jobs_pipe():
    """Regression (issue 22): the relay's release and the answer writer's end each closed the job's
    pipe themselves (``job.close_pipe()``), beside the pool's three places; the server now gives a
    job back with ``WorkerPool.release`` or ``WorkerPool.cancel``."""
    found = [
        f"{name}:{node.lineno}"
        for name, tree in _modules()
        if not (PACKAGE / name).is_relative_to(POOL)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "close_pipe"
    ]
    assert found == [], f"a job's pipe closed outside litkit/pool (call WorkerPool.release or cancel): {found}"


def test_the_pool_knows_jobs_not_records():
    """The pool takes no tracker and a job no record: a request's record is its handler's."""
    pool_source = (POOL / "pool.py").read_text(encoding="utf-8") + (POOL / "jobs.py").read_text(encoding="utf-8")
    assert "RequestTracker" not in pool_source and "RequestRecord" not in pool_source
