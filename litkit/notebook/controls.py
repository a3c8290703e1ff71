"""The dashboard's buttons as an anywidget: Cancel (one per live request, in a column of their
own) and Stop, drawn by the browser, which sends each click over HTTP to the server's control
paths (``/litkit/control/cancel`` and ``/stop``) with the per-server control secret this model
holds. So a click takes effect while a cell runs: through the kernel's comm it waited for the cell.

The kernel only sets ``rows`` (the live requests), ``more`` and ``state``, when they change. Needs
``anywidget`` (``pip install 'litkit[dashboard]'``); without it the dashboard keeps ipywidgets
buttons whose clicks go through the kernel (``litkit.notebook.dashboard``).
"""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets

__all__ = ["ControlPanel"]

_ESM = r"""
function xsrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : null;
}

async function post(model, action, body) {
  const control = model.get("control");
  const headers = { "Content-Type": "application/json", [control.header]: control.secret };
  if (control.url.startsWith("/")) {  // litkit's Jupyter route, same origin: Jupyter wants its XSRF token
    const token = xsrfToken();
    if (token) headers["X-XSRFToken"] = token;
  }
  const started = performance.now();
  try {
    const response = await fetch(`${control.url}/${action}`, { method: "POST", headers, body: JSON.stringify(body), credentials: "same-origin" });
    const answer = await response.json().catch(() => ({}));
    return { ok: response.ok, status: response.status, answer, ms: performance.now() - started };
  } catch (error) {
    return { ok: false, status: 0, answer: { error: String(error) }, ms: performance.now() - started };
  }
}

function button(text, className) {
  const element = document.createElement("button");
  element.className = `litkit-button ${className}`;
  element.textContent = text;
  return element;
}

function render({ model, el }) {
  el.classList.add("litkit-controls");
  const stop = button("Stop server", "litkit-stop");
  stop.title = "stop the server and its workers";
  const grid = document.createElement("div");
  grid.className = "litkit-cancel-grid";
  const more = document.createElement("div");
  more.className = "litkit-more";
  const part = model.get("part");  // "stop": the Stop button only (in the header); "cancel": the rows only
  el.append(...(part === "cancel" ? [] : [stop]), ...(part === "stop" ? [] : [grid, more]));
  const rows = new Map();  // request id -> {label, cancel}

  stop.addEventListener("click", async () => {
    stop.disabled = true;
    stop.textContent = "Stopping";
    const result = await post(model, "stop", {});
    stop.dataset.status = String(result.status);
    if (!result.ok) {
      stop.textContent = "Stop failed";
      stop.title = result.answer.error || `HTTP ${result.status}`;
      stop.disabled = false;
    }
  });

  function makeRow(id) {
    const label = document.createElement("div");
    label.className = "litkit-cancel-label";
    const cancel = button("Cancel", "litkit-cancel");
    cancel.title = `cancel request ${id} as if its client had left`;
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      cancel.textContent = "Cancelling";
      const result = await post(model, "cancel", { request_id: id });
      // On the panel too: the row goes once the server has dropped the request.
      for (const target of [cancel, el]) {
        target.dataset.cancelStatus = String(result.status);
        target.dataset.cancelMs = result.ms.toFixed(1);
      }
      if (!result.ok) {
        cancel.textContent = "Cancel failed";
        cancel.title = result.answer.error || `HTTP ${result.status}`;
      }
    });
    return { label, cancel };
  }

  function draw() {
    const state = model.get("state");
    if (state === "stopped" || state === "replaced") {
      stop.disabled = true;
      stop.textContent = state[0].toUpperCase() + state.slice(1);
      stop.dataset.state = state;
    }
    const live = new Map(model.get("rows"));
    for (const [id, row] of rows) {
      if (!live.has(id)) {
        row.label.remove();
        row.cancel.remove();
        rows.delete(id);
      }
    }
    for (const [id, text] of live) {
      let row = rows.get(id);
      if (!row) {
        row = makeRow(id);
        rows.set(id, row);
      }
      // Text, never HTML: the line holds the request's target as the client sent it (issue 25).
      if (row.label.textContent !== text) row.label.textContent = text;
      grid.append(row.label, row.cancel);  // keeps the server's order
    }
    more.textContent = model.get("more");
  }

  model.on("change:rows", draw);
  model.on("change:more", draw);
  model.on("change:state", draw);
  draw();
}

export default { render };
"""

_CSS = """
.litkit-controls { display: flex; flex-direction: column; gap: 4px; font-size: 12px; }
.litkit-controls .litkit-button { font: inherit; padding: 2px 10px; border-radius: 4px; border: 1px solid #d0d7de; cursor: pointer; }
.litkit-controls .litkit-button:disabled { cursor: default; opacity: 0.6; }
.litkit-controls .litkit-stop { align-self: flex-start; background: #cf222e; border-color: #a40e26; color: white; }
.litkit-controls .litkit-cancel { background: #bf8700; border-color: #9a6700; color: white; }
.litkit-cancel-grid { display: grid; grid-template-columns: minmax(0, max-content) max-content; gap: 2px 12px; align-items: center; }
.litkit-controls .litkit-more { font-size: 11px; color: #57606a; }
.litkit-cancel-label { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
"""


class ControlPanel(anywidget.AnyWidget):
    """Stop and Cancel, in the browser. ``control``: ``{"url", "header", "secret"}`` of the
    server's control paths; ``part``: ``"stop"`` (the Stop button), ``"cancel"`` (the Cancel
    rows) or ``"all"``; ``rows``: ``[request id, text]`` of the requests that may be
    cancelled, oldest first; ``more``: a line of text under them; ``state``: the server's state.
    The browser sets both as text (``textContent``), never as HTML: they hold what clients sent."""

    _esm = _ESM
    _css = _CSS
    control = traitlets.Dict().tag(sync=True)
    part = traitlets.Enum(("all", "stop", "cancel"), default_value="all").tag(sync=True)
    rows: traitlets.List[Any] = traitlets.List().tag(sync=True)
    more = traitlets.Unicode("").tag(sync=True)
    state = traitlets.Unicode("starting").tag(sync=True)
