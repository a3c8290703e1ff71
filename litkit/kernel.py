"""Where the calling code runs, when that is a Jupyter kernel: whether a widget can be shown, and
which cell is executing (so that re-running the cell that serves replaces its earlier server).

Standard library only, and it imports nothing: it looks for IPython among the modules already
loaded, so outside Jupyter it costs nothing and loads nothing.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

__all__ = ["current_cell", "in_jupyter_kernel", "live_view_bundle"]


def _kernel() -> Any:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return getattr(shell, "kernel", None)


def in_jupyter_kernel() -> bool:
    """True inside an IPython kernel (JupyterLab, Notebook, VS Code, nbclient), where a widget can be shown."""
    return _kernel() is not None


def current_cell() -> tuple[str, str] | None:
    """(cell id, execution request id) of the cell the kernel is running, or None.

    The cell id comes from the frontend (JupyterLab and Notebook 7 send ``cellId`` with each
    execution); None outside a kernel or when the frontend does not say.
    """
    kernel = _kernel()
    if kernel is None:
        return None
    try:
        parent = kernel.get_parent("shell")  # ipykernel 6 and 7
    except Exception:  # noqa: BLE001 - an older or unusual kernel: no cell to tell
        return None
    cell_id = (parent.get("metadata") or {}).get("cellId")
    msg_id = (parent.get("header") or {}).get("msg_id")
    if not isinstance(cell_id, str) or not cell_id or not isinstance(msg_id, str):
        return None
    return cell_id, msg_id


def live_view_bundle(text: str, widget: Callable[[], Any]) -> dict[str, Any]:
    """A ``_repr_mimebundle_`` for an object with a live view: in a Jupyter kernel, the bundle of
    the widget that ``widget()`` returns, with ``text`` as its plain-text fallback; elsewhere
    ``text`` alone, and no widget is made."""
    if not in_jupyter_kernel():
        return {"text/plain": text}
    bundle = dict(widget()._repr_mimebundle_())
    bundle["text/plain"] = text
    return bundle
