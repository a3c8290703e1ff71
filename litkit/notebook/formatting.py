"""Text and HTML for the dashboard, made from ``Server.status()`` snapshots.

Pure functions of plain data, standard library only, so they are tested without a kernel and the
dashboard widget only has to put the strings where they go. Every value from outside (request ids,
paths, errors, what workers print) is HTML-escaped.
"""

from __future__ import annotations

import html
from typing import Any

__all__ = [
    "COUNT_LABELS",
    "describe_request",
    "format_seconds",
    "more_requests_text",
    "render_cancel_label",
    "render_counts",
    "render_header",
    "render_logs",
    "render_ray_application",
    "render_ray_deployments",
    "render_requests",
    "render_stats",
    "render_workers",
    "running_requests",
]

COUNT_LABELS = (
    ("queued", "queued"),
    ("running", "running"),
    ("completed", "completed"),
    ("failed", "failed"),
    ("cancelled", "cancelled"),
    ("timed_out", "timed out"),
)
_STATE_COLOURS = {
    "starting": "#b26b00",
    "serving": "#1a7f37",
    "stopped": "#6e7781",
    "replaced": "#6e7781",
    "draining": "#b26b00",
    "idle": "#1a7f37",
    "busy": "#0969da",
    "dead": "#cf222e",
    "queued": "#6e7781",
    "running": "#0969da",
    "completed": "#1a7f37",
    "failed": "#cf222e",
    "cancelled": "#b26b00",
    "timed_out": "#cf222e",
    # Ray Serve's application, deployment, replica and proxy states (``serve.status()``)
    "RUNNING": "#1a7f37",
    "HEALTHY": "#1a7f37",
    "NOT_STARTED": "#6e7781",
    "DEPLOYING": "#b26b00",
    "UPDATING": "#b26b00",
    "UPSCALING": "#b26b00",
    "DOWNSCALING": "#b26b00",
    "STARTING": "#b26b00",
    "PENDING_MIGRATION": "#b26b00",
    "RECOVERING": "#b26b00",
    "DRAINING": "#b26b00",
    "STOPPING": "#6e7781",
    "DELETING": "#6e7781",
    "STOPPED": "#6e7781",
    "NOT_FOUND": "#cf222e",
    "UNHEALTHY": "#cf222e",
    "DEPLOY_FAILED": "#cf222e",
}
_TABLE = 'style="border-collapse:collapse;font-size:12px;margin:2px 0"'
_CELL = 'style="padding:1px 8px;text-align:left;border-bottom:1px solid #eaeef2"'


def format_seconds(seconds: float | None) -> str:
    """``"—"``, ``"850 µs"``, ``"12.3 ms"``, ``"1.24 s"`` or ``"2 min 5 s"``."""
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def describe_request(entry: dict[str, Any]) -> str:
    """One line about a request: the error or reason it ended with, or how far it got.

    A cancelled stream reads like "client left after 12 chunks" (the reason the server recorded).
    """
    state = entry.get("state")
    chunks = int(entry.get("chunks") or 0)
    error = entry.get("error")
    if state == "queued":
        return "waiting for a worker"
    if state == "running":
        return f"streaming: {_plural(chunks, 'chunk')} sent" if chunks else "running"
    if error:
        return str(error)
    if state == "completed":
        return _plural(chunks, "chunk") if chunks else "answered"
    return str(state)


def _badge(state: str) -> str:
    colour = _STATE_COLOURS.get(state, "#24292f")
    return f'<span class="litkit-state" data-state="{html.escape(state)}" style="color:{colour};font-weight:600">{html.escape(state)}</span>'


def render_header(title: str, state: str, endpoint: str, link: str, api_key: str | None = None, versions: list[dict[str, Any]] | None = None) -> str:
    """The first line: the API's name, the endpoint as a link, the server's state, and the API key
    callers must send, if the server has one; after a re-run, which version serves and which
    still start or finish their requests (``status()["versions"]``)."""
    key = f' · key <code class="litkit-api-key">{html.escape(api_key)}</code>' if api_key else ""
    return (
        '<div class="litkit-header" style="font-size:13px">'
        f"<b>litkit</b> · {html.escape(title)} · "
        f'<a class="litkit-url" href="{html.escape(link)}" target="_blank" rel="noopener">'
        f"<code>POST {html.escape(endpoint)}</code></a> · {_badge(state)}{_render_versions(versions or [])}{key}</div>"
    )


def _render_versions(versions: list[dict[str, Any]]) -> str:
    """Nothing while the first version serves alone; else each version and what it does."""
    if len(versions) < 2 and all(int(v.get("version", 1)) == 1 for v in versions):
        return ""
    parts = []
    for version in versions:
        what = str(version.get("state", "?"))
        left = int(version.get("in_flight") or 0)
        detail = f" ({_plural(left, 'request')} left)" if what == "draining" else ""
        number = int(version.get("version", 0))
        parts.append(f'<span class="litkit-version" data-version="{number}">version {number} {_badge(what)}{detail}</span>')
    return " · " + ", ".join(parts)


def render_health(health: dict[str, Any] | None) -> str:
    """Nothing while healthy; else why ``/health`` answers 503 (e.g. a worker left down)."""
    if not health or health.get("ok", True):
        return ""
    reason = str(health.get("reason") or "unavailable")
    return f'<div class="litkit-health" style="font-size:12px;color:#cf222e"><b>unhealthy</b>: {html.escape(reason)}</div>'


def render_counts(counts: dict[str, int]) -> str:
    """The request counts, each in a ``span`` with ``data-count`` naming the state."""
    cells = [
        f'<span class="litkit-count" data-count="{key}" style="margin-right:14px">{label} '
        f'<b class="litkit-count-value">{int(counts.get(key, 0))}</b></span>'
        for key, label in COUNT_LABELS
    ]
    return '<div class="litkit-counts" style="font-size:13px">' + "".join(cells) + "</div>"


def render_stats(stats: dict[str, Any] | None) -> str:
    """Throughput and p50/p95 latency over the last minute."""
    stats = stats or {}
    window = float(stats.get("window_s") or 0.0)
    throughput = float(stats.get("throughput") or 0.0)
    return (
        f'<div class="litkit-stats" style="font-size:12px;color:#57606a">last {window:.0f} s: '
        f'<b class="litkit-throughput">{throughput:.1f} req/s</b> · '
        f"p50 {format_seconds(stats.get('p50_s'))} · p95 {format_seconds(stats.get('p95_s'))}</div>"
    )


def _table(headers: list[str], rows: list[list[str]], css_class: str) -> str:
    head = "".join(f"<th {_CELL}>{h}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td {_CELL}>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}" {_TABLE}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_workers(workers: list[dict[str, Any]]) -> str:
    """One row per worker: id, pid, state, requests handled, restarts; and its version, once a
    re-run has served another."""
    versioned = any(int(w.get("version", 1)) != 1 for w in workers)
    rows = [
        [
            str(int(w.get("id", 0))), *([str(int(w.get("version", 1)))] if versioned else []), str(int(w.get("pid", 0)) or "—"),
            _badge(str(w.get("state", "?"))), str(int(w.get("handled", 0))), str(int(w.get("restarts", 0))),
        ]
        for w in workers
    ]
    return _table(["worker", *(["version"] if versioned else []), "pid", "state", "handled", "restarts"], rows, "litkit-workers")


def render_requests(recent: list[dict[str, Any]], limit: int = 15) -> str:
    """The newest ``limit`` requests: id, path, state, chunks sent, duration, error or detail; and
    the version that answered, once a re-run has served another."""
    rows = []
    versioned = any(int(entry.get("version", 1)) != 1 for entry in recent[:limit])
    for entry in recent[:limit]:
        duration = entry.get("duration_s")
        if duration is None:
            duration = entry.get("elapsed_s")
        rows.append(
            [
                f"<code>{html.escape(str(entry.get('id', '')))}</code>",
                html.escape(str(entry.get("path", ""))),
                *([str(int(entry.get("version", 1)))] if versioned else []),
                _badge(str(entry.get("state", "?"))),
                str(int(entry.get("chunks") or 0)),
                format_seconds(duration),
                f'<span class="litkit-detail">{html.escape(describe_request(entry))}</span>',
            ]
        )
    more = len(recent) - limit
    note = f'<div style="font-size:11px;color:#57606a">and {more} older in status()["recent"]</div>' if more > 0 else ""
    if not rows:
        return '<div class="litkit-requests" style="font-size:12px;color:#57606a">no requests yet</div>'
    return _table(["request", "path", *(["version"] if versioned else []), "state", "chunks", "duration", "detail"], rows, "litkit-requests") + note


def render_logs(lines: list[dict[str, Any]], limit: int = 20) -> str:
    """The last ``limit`` lines workers printed (stderr and tracebacks in red), oldest first."""
    shown = lines[-limit:]
    if not shown:
        return '<pre class="litkit-logs" style="font-size:11px;color:#57606a;margin:0">no worker output yet</pre>'
    rendered = []
    for line in shown:
        stream = str(line.get("stream", "stdout"))
        colour = "#24292f" if stream == "stdout" else "#cf222e"
        rendered.append(f'<span style="color:{colour}">[worker {int(line.get("worker", -1))}] {html.escape(str(line.get("text", "")))}</span>')
    return (
        '<pre class="litkit-logs" style="font-size:11px;margin:0;max-height:16em;overflow:auto;'
        'white-space:pre-wrap;word-break:break-all">' + "\n".join(rendered) + "</pre>"
    )


def running_requests(recent: list[dict[str, Any]], min_age_s: float = 0.0) -> list[tuple[str, str]]:
    """(request id, one line of plain text) for each queued or running request at least
    ``min_age_s`` old, oldest first. The text holds the request's target as the client sent it: set
    it as text, or as HTML only through ``render_cancel_label``."""
    live = [entry for entry in recent if entry.get("state") in ("queued", "running") and float(entry.get("elapsed_s") or 0.0) >= min_age_s]
    return [
        (str(entry["id"]), f"{entry['id']} · {entry.get('path', '')} · {describe_request(entry)} · {format_seconds(entry.get('elapsed_s'))}")
        for entry in reversed(live)
    ]


def render_cancel_label(text: str) -> str:
    """A Cancel row's line (from ``running_requests``) as HTML for an ipywidgets ``HTML``: escaped,
    since it holds the request's target as the client sent it (issue 25: ``?<img onerror=...>``)."""
    return f'<span class="litkit-cancel-label">{html.escape(text)}</span>'


def more_requests_text(live: int, shown: int) -> str:
    """The line under the Cancel rows when ``live`` requests could be cancelled and ``shown`` are."""
    more = live - shown
    return f"and {more} more queued or running" if more > 0 else ""


def _replica_counts(replicas: dict[str, int]) -> str:
    if not replicas:
        return "none"
    return ", ".join(f"{int(count)} {_badge(str(state))}" for state, count in sorted(replicas.items()))


def render_ray_application(snapshot: dict[str, Any]) -> str:
    """A Ray Serve application's line: its status, its replicas by state, Ray's message, and what
    Ray's status does not have (request counts; they are in Ray's dashboard and metrics)."""
    status = str(snapshot.get("status", "?"))
    message = str(snapshot.get("message") or "")
    proxies = snapshot.get("proxies") or {}
    proxy_text = f" · proxies {_replica_counts(proxies)}" if proxies else ""
    note = (
        '<div class="litkit-ray-note" style="font-size:11px;color:#57606a">Ray Serve\'s status has no request '
        "counts: requests, latencies and logs are in Ray's dashboard and metrics. Cancelling a request and "
        "restarting a worker are litkit's own server's: on Ray a client that hangs up cancels its request.</div>"
    )
    detail = f'<div class="litkit-ray-message" style="font-size:12px;color:#57606a">{html.escape(message)}</div>' if message else ""
    return (
        '<div class="litkit-ray-application" style="font-size:13px">'
        f'Ray Serve application <code>{html.escape(str(snapshot.get("application", "")))}</code> '
        f'<span class="litkit-ray-status">{_badge(status)}</span> · replicas '
        f'<span class="litkit-ray-replicas">{_replica_counts(snapshot.get("replicas") or {})}</span>{proxy_text}</div>'
        + detail
        + note
    )


def render_ray_deployments(deployments: list[dict[str, Any]]) -> str:
    """One row per deployment of the application: its name, the paths it serves, its status, its
    replicas by state, Ray's message."""
    if not deployments:
        return '<div class="litkit-ray-deployments" style="font-size:12px;color:#57606a">no deployments</div>'
    rows = [
        [
            f"<code>{html.escape(str(d.get('name', '')))}</code>",
            html.escape(" ".join(d.get("paths") or ()) or "(routes to the others)"),
            _badge(str(d.get("status", "?"))),
            _replica_counts(d.get("replicas") or {}),
            html.escape(str(d.get("message") or "")),
        ]
        for d in deployments
    ]
    return _table(["deployment", "paths", "status", "replicas", "message"], rows, "litkit-ray-deployments")
