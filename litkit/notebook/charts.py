"""The dashboard's charts, drawn by the browser: sparklines of throughput and p50/p95 latency over
the last minutes, and the recent streams as bars that grow with their chunks and end marked
completed, client left, cancelled or failed.

The kernel computes the figures (``litkit.notebook.figures``) and sets the traits only when they
changed; the series takes at most one point a second. Needs ``anywidget``
(``pip install 'litkit[dashboard]'``); without it the dashboard shows the figures as text only.
"""

from __future__ import annotations

from typing import Any

import anywidget
import traitlets

__all__ = ["Charts"]

_ESM = r"""
const COLOURS = {
  running: "#0969da", queued: "#6e7781", completed: "#1a7f37", "client left": "#b26b00", cancelled: "#b26b00", failed: "#cf222e",
  "timed out": "#cf222e",
};
const SVG = "http://www.w3.org/2000/svg";

function svg(name, attributes) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function sparkline(title, lines, points, unit) {
  const width = 220, height = 44, pad = 2;
  const box = document.createElement("div");
  box.className = "litkit-chart";
  const values = lines.flatMap(([index]) => points.map((p) => p[index]).filter((v) => v !== null));
  const top = Math.max(1e-9, ...values);
  const span = Math.max(1, points.length ? points[points.length - 1][0] - points[0][0] : 1);
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "litkit-sparkline" });
  chart.append(svg("line", { x1: 0, y1: height - pad, x2: width, y2: height - pad, stroke: "#d0d7de" }));
  const legend = [];
  for (const [index, name, colour] of lines) {
    const drawn = points.filter((p) => p[index] !== null);
    if (drawn.length) {
      const x = (p) => (((p[0] - points[0][0]) / span) * (width - 2 * pad) + pad).toFixed(1);
      const y = (p) => (height - pad - (p[index] / top) * (height - 2 * pad)).toFixed(1);
      const d = drawn.map((p, i) => `${i ? "L" : "M"}${x(p)},${y(p)}`).join(" ");
      chart.append(svg("path", { d, fill: "none", stroke: colour, "stroke-width": 1.5, "data-series": name }));
      const last = drawn[drawn.length - 1][index];
      const entry = document.createElement("span");
      entry.style.color = colour;
      entry.textContent = `${name} ${last.toFixed(last < 10 ? 2 : 1)}${unit}`;
      legend.push(entry);
    }
  }
  // Built as elements and text, never innerHTML (issue 25): nothing here may become markup.
  const heading = document.createElement("div");
  heading.className = "litkit-chart-title";
  heading.append(`${title} `);
  legend.forEach((entry, index) => heading.append(...(index ? [" · ", entry] : [entry])));
  box.append(heading, chart);
  return box;
}

function bars(rows) {
  const box = document.createElement("div");
  box.className = "litkit-bars";
  const most = Math.max(1, ...rows.map((row) => row[1]));
  for (const [id, chunks, outcome] of rows) {
    const row = document.createElement("div");
    row.className = "litkit-bar-row";
    row.dataset.outcome = outcome;
    const label = document.createElement("span");
    label.className = "litkit-bar-id";
    label.textContent = id;
    const track = document.createElement("span");
    track.className = "litkit-bar-track";
    const bar = document.createElement("span");
    bar.className = "litkit-bar";
    bar.style.width = `${(100 * chunks) / most}%`;
    bar.style.background = COLOURS[outcome] || "#57606a";
    track.append(bar);
    const end = document.createElement("span");
    end.className = "litkit-bar-outcome";
    end.style.color = COLOURS[outcome] || "#57606a";
    end.textContent = `${chunks} · ${outcome}`;
    row.append(label, track, end);
    box.append(row);
  }
  return box;
}

function render({ model, el }) {
  el.classList.add("litkit-charts");
  function draw() {
    const points = model.get("series");
    const rows = model.get("streams");
    const charts = document.createElement("div");
    charts.className = "litkit-sparklines";
    charts.append(
      sparkline("throughput", [[1, "req/s", "#0969da"]], points, ""),
      sparkline("latency", [[2, "p50", "#1a7f37"], [3, "p95", "#b26b00"]], points, " ms"),
    );
    el.replaceChildren(charts, ...(rows.length ? [bars(rows)] : []));
  }
  model.on("change:series", draw);
  model.on("change:streams", draw);
  draw();
}

export default { render };
"""

_CSS = """
.litkit-charts { display: flex; flex-direction: column; gap: 6px; font-size: 11px; color: #57606a; margin: 4px 0; }
.litkit-sparklines { display: flex; gap: 16px; flex-wrap: wrap; }
.litkit-chart-title { margin-bottom: 1px; }
.litkit-bars { display: grid; grid-template-columns: max-content 220px max-content; gap: 2px 8px; align-items: center; }
.litkit-bar-row { display: contents; }
.litkit-bar-id { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
.litkit-bar-track { height: 8px; background: #eaeef2; border-radius: 4px; overflow: hidden; }
.litkit-bar { display: block; height: 100%; border-radius: 4px; transition: width 0.2s; }
"""


class Charts(anywidget.AnyWidget):
    """``series``: ``figures.ChartSeries.points()``; ``streams``: ``figures.stream_bars(...)``."""

    _esm = _ESM
    _css = _CSS
    series: traitlets.List[Any] = traitlets.List().tag(sync=True)
    streams: traitlets.List[Any] = traitlets.List().tag(sync=True)
