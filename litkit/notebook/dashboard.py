"""The live dashboard: an ipywidgets widget that shows a server's status and has Stop and Cancel.

It sits on top of the server and knows it only through three callables: ``status`` (a snapshot
dict, as ``Server.status()`` returns), ``cancel(request_id, reason)`` and ``stop()``. The server
thread never touches a widget: a daemon thread of the dashboard (``litkit-dashboard-<name>``) polls
the snapshot at most ``1 / interval`` times a second, renders it to strings (``litkit.notebook.formatting``),
and sets only the values that changed, inside ``hold_sync()``, so an unchanged server sends
nothing to the frontend and a busy one sends one batch per refresh.

The buttons: given ``control`` (the server's control paths and secret) and with anywidget
installed, Stop and Cancel are a ``litkit.notebook.controls.ControlPanel``, drawn by the browser,
whose clicks go over HTTP straight to the server, so they take effect while a cell runs; the
kernel only tells it which requests are live. Otherwise they are ipywidgets buttons, whose
callbacks run on whatever thread the kernel handles comm messages on (the main thread on
ipykernel 6, so only once the running cell ends; possibly another thread on ipykernel 7). Every
change to the widgets happens under one lock, and the callbacks call only thread-safe server methods.

Without a frontend (a plain Python process) the widgets have no comm to send on, and the
dashboard still refreshes: a benchmark can measure serving with it running.
"""

from __future__ import annotations

import contextlib
import html
import logging
import threading
import time
from typing import Any, Callable

import ipywidgets as widgets

from .figures import ChartSeries, stream_bars
from .formatting import (
    more_requests_text,
    render_cancel_label,
    render_counts,
    render_header,
    render_health,
    render_logs,
    render_requests,
    render_stats,
    render_workers,
    running_requests,
)
from .refresher import Refresher

__all__ = ["Dashboard", "DEFAULT_INTERVAL_S", "CANCEL_REASON"]

logger = logging.getLogger("litkit.notebook.dashboard")

DEFAULT_INTERVAL_S = 0.2  # at most 5 refreshes a second
CANCEL_REASON = "cancelled from the dashboard"
MAX_CANCEL_ROWS = 8
# A request gets a Cancel row once it has been queued or running this long. Short requests would
# only flicker past (and each row is three widgets to create and close); long ones are the ones
# worth cancelling. Measured: without it, a dashboard on a server answering ~1,500 short requests a
# second spent ~7 ms of CPU per refresh making and closing rows, and serving slowed visibly.
CANCEL_MIN_AGE_S = 0.5
_FINAL_STATES = ("stopped", "replaced")

Status = Callable[[], dict[str, Any]]


class Dashboard(widgets.VBox):
    """A server's live view: header with the link, state and API key, health, counts, throughput and latency,
    workers, recent requests, a Cancel button per live request, the workers' last output, Stop.

    Args:
        status: returns a ``Server.status()``-shaped snapshot; called from the refresh thread.
        title: the API's name, shown in the header.
        endpoint: the predict URL to show; ``link`` is where the header link points.
        cancel: ``cancel(request_id, reason)``; None hides the Cancel buttons.
        stop: stops the server; None hides the Stop button.
        interval: seconds between refreshes (at least 0.05).
        start: start the refresh thread now (``refresh()`` can also be called by hand).
        api_key: the key callers must send, shown in the header; None shows none.
        control: ``{"url", "header", "secret"}`` of the server's control paths
            (``litkit.server.controls``): the browser's buttons call them directly. Needs
            anywidget; without it the buttons go through the kernel (``cancel`` and ``stop``).

    Unhealthy servers (``status()["health"]["ok"]`` False, e.g. a worker left down after failing
    to start) get a red line with the reason under the header.
    """

    def __init__(
        self,
        status: Status,
        *,
        title: str,
        endpoint: str,
        link: str,
        cancel: Callable[[str, str], Any] | None = None,
        stop: Callable[[], Any] | None = None,
        interval: float = DEFAULT_INTERVAL_S,
        start: bool = True,
        api_key: str | None = None,
        control: dict[str, str] | None = None,
    ) -> None:
        # close() (which ipywidgets also calls from __del__) needs these even if __init__ fails.
        self._refresher = Refresher()
        self._lock = threading.RLock()
        self._cancel_rows: dict[str, widgets.HBox] = {}
        self._panel: Any = None  # the Cancel rows, drawn by the browser
        self._stop_panel: Any = None  # the Stop button, drawn by the browser
        self._charts: Any = None
        super().__init__()
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 0.05:
            raise ValueError(f"interval must be at least 0.05 seconds (at most 20 refreshes a second), got {interval!r}")
        self._status = status
        self._title = title
        self._endpoint = endpoint
        self._link = link
        self._api_key = api_key
        self._cancel = cancel
        self._stop = stop
        self._interval = float(interval)
        self._shown: dict[str, str] = {}
        self.refreshes = 0  # snapshots taken
        self.updates = 0  # refreshes that changed something on screen
        self.state = "starting"

        self._sections = {name: widgets.HTML() for name in ("header", "health", "counts", "stats", "workers", "requests", "logs")}
        self._stop_button = widgets.Button(description="Stop server", button_style="danger", icon="stop", tooltip="stop the server and its workers")
        self._stop_button.add_class("litkit-stop")
        self._stop_button.on_click(self._on_stop)
        self._cancel_box = widgets.VBox()
        self._more = widgets.HTML()
        self._panel = _control_panel(control, "cancel")
        self._stop_panel = _control_panel(control, "stop") if self._panel is not None and stop is not None else None
        self._charts = _charts()
        self._series = ChartSeries()
        self._series_due = False
        in_header = [self._stop_panel] if self._stop_panel is not None else [self._stop_button] if stop is not None and self._panel is None else []
        header = widgets.HBox([self._sections["header"], *in_header])
        buttons = (self._panel,) if self._panel is not None else (self._cancel_box, self._more)
        self.children = (
                header,
                self._sections["health"],
                self._sections["counts"],
                self._sections["stats"],
                *((self._charts,) if self._charts is not None else ()),
                self._sections["workers"],
                *buttons,
                self._sections["requests"],
                widgets.HTML("<div style='font-size:12px;margin-top:4px'><b>worker output</b></div>"),
                self._sections["logs"],
        )
        self.add_class("litkit-dashboard")
        self.refresh()
        if start and self.state not in _FINAL_STATES:
            self._refresher.start(f"litkit-dashboard-{title}", self._interval, self.refresh, lambda: self.state in _FINAL_STATES, logger)

    # -- refreshing -------------------------------------------------------------------------------

    def refresh(self, snapshot: dict[str, Any] | None = None, resend: bool = False) -> bool:
        """Show ``snapshot`` (by default a fresh ``status()``); True if anything on screen changed.

        ``resend`` sends every section's value even if unchanged (see ``finish``).
        """
        if snapshot is None:
            snapshot = self._status()
        self.refreshes += 1
        state = str(snapshot.get("state", "?"))
        recent = list(snapshot.get("recent", []))
        sections = {
            "header": render_header(self._title, state, self._endpoint, self._link, self._api_key, snapshot.get("versions")),
            # Once the server has ended its health only says so; the state badge shows that already.
            "health": render_health(snapshot.get("health") if state not in _FINAL_STATES else None),
            "counts": render_counts(snapshot.get("counts", {})),
            "stats": render_stats(snapshot.get("stats")),
            "workers": render_workers(snapshot.get("workers", [])),
            "requests": render_requests(recent),
            "logs": render_logs(snapshot.get("logs", [])),
        }
        live = running_requests(recent, CANCEL_MIN_AGE_S) if state not in _FINAL_STATES and self._cancel is not None else []
        with self._lock:
            self.state = state
            changed = {name: text for name, text in sections.items() if self._shown.get(name) != text}
            rows_changed = self._panel_differs(live, state) if self._panel is not None else self._rows_differ(live)
            stop_label = state.capitalize()  # shown on the Stop button once the server has ended
            stop_changed = self._panel is None and state in _FINAL_STATES and (self._stop_button.description != stop_label or not self._stop_button.disabled)
            charts_changed = self._charts_differ(state, snapshot.get("stats"), recent)
            if resend:
                for name in sections.keys() - changed.keys():
                    self._sections[name].send_state("value")
                if self._charts is not None and not charts_changed:
                    self._charts.send_state(["series", "streams"])
                if self._panel is not None and not rows_changed:
                    self._panel.send_state(["rows", "more", "state"])
                    if self._stop_panel is not None:
                        self._stop_panel.send_state("state")
            if not changed and not rows_changed and not stop_changed and not charts_changed:
                return False
            with contextlib.ExitStack() as held:
                for name in changed:
                    held.enter_context(self._sections[name].hold_sync())
                for name, text in changed.items():
                    self._sections[name].value = text
                if rows_changed and self._panel is not None:
                    self._show_panel(live, state)
                elif rows_changed:
                    self._show_rows(live)
                if charts_changed:
                    self._show_charts(recent)
                if stop_changed:
                    with self._stop_button.hold_sync():
                        self._stop_button.description = stop_label
                        self._stop_button.disabled = True
            self._shown.update(changed)
            self.updates += 1
        return True

    def finish(self) -> None:
        """Stop refreshing after showing the latest snapshot: the widget keeps the final figures.

        Called by ``Server.stop()``. It refreshes on the caller's thread and sends every value
        again: a headless run (nbclient) records only messages sent while a cell runs, and the
        refresher may have shown the last figures between cells.

        The API key and the control secret are dropped first (issue 25): a saved notebook keeps
        the widgets' state, and neither is of use once the server stopped. (While it serves, the
        state holds both: a notebook saved then with its widget state carries them.)
        """
        with self._lock:
            self._api_key = None
            for panel in (self._panel, self._stop_panel):
                if panel is not None and panel.control:
                    panel.control = {}
        self._refresher.finish(lambda: self.refresh(resend=True), "the litkit dashboard", logger)

    def close(self) -> None:
        """Stop refreshing and close the widget and its children."""
        self._refresher.halt()
        with self._lock:
            for row in self._cancel_rows.values():
                _close_all(row)
            self._cancel_rows.clear()
            for widget in (self._panel, self._stop_panel, self._charts):
                if widget is not None:
                    widget.close()
            for child in list(self.children):
                _close_all(child)
            super().close()

    # -- the charts -------------------------------------------------------------------------------

    def _charts_differ(self, state: str, stats: dict[str, Any] | None, recent: list[dict[str, Any]]) -> bool:
        """Whether the charts need new values: a point of the series is due (at most one a second,
        while serving), or the streams' bars changed."""
        if self._charts is None:
            return False
        self._series_due = state not in _FINAL_STATES and self._series.sample(time.monotonic(), stats)
        return self._series_due or self._charts.streams != stream_bars(recent)

    def _show_charts(self, recent: list[dict[str, Any]]) -> None:
        charts = self._charts
        with charts.hold_sync():
            if self._series_due:
                charts.series = self._series.points()
            bars = stream_bars(recent)
            if charts.streams != bars:
                charts.streams = bars

    # -- the Cancel rows --------------------------------------------------------------------------

    def _panel_differs(self, live: list[tuple[str, str]], state: str) -> bool:
        panel = self._panel
        rows = [list(row) for row in live[:MAX_CANCEL_ROWS]]
        stop_panel = self._stop_panel
        return panel.rows != rows or panel.more != _more_text(len(live)) or panel.state != state or (stop_panel is not None and stop_panel.state != state)

    def _show_panel(self, live: list[tuple[str, str]], state: str) -> None:
        panel = self._panel
        with panel.hold_sync():
            rows = [list(row) for row in live[:MAX_CANCEL_ROWS]]
            if panel.rows != rows:
                panel.rows = rows
            if panel.more != _more_text(len(live)):
                panel.more = _more_text(len(live))
            if panel.state != state:
                panel.state = state
        if self._stop_panel is not None and self._stop_panel.state != state:
            self._stop_panel.state = state

    def _rows_differ(self, live: list[tuple[str, str]]) -> bool:
        shown = live[:MAX_CANCEL_ROWS]
        if [request_id for request_id, _ in shown] != list(self._cancel_rows):
            return True
        if any(self._cancel_rows[request_id].children[0].value != render_cancel_label(text) for request_id, text in shown):
            return True
        return self._more.value != _more_html(len(live))

    def _show_rows(self, live: list[tuple[str, str]]) -> None:
        shown = dict(live[:MAX_CANCEL_ROWS])
        for request_id in [r for r in self._cancel_rows if r not in shown]:
            _close_all(self._cancel_rows.pop(request_id))
        rows: dict[str, widgets.HBox] = {}
        for request_id, text in shown.items():
            row = self._cancel_rows.get(request_id)
            if row is None:
                row = self._make_row(request_id)
            label = row.children[0]
            if label.value != render_cancel_label(text):
                label.value = render_cancel_label(text)
            rows[request_id] = row
        self._cancel_rows = rows
        children = tuple(rows.values())
        if self._cancel_box.children != children:
            self._cancel_box.children = children
        more = _more_html(len(live))
        if self._more.value != more:
            self._more.value = more

    def _make_row(self, request_id: str) -> widgets.HBox:
        label = widgets.HTML()
        button = widgets.Button(description="Cancel", button_style="warning", tooltip=f"cancel request {request_id} as if its client had left")
        button.add_class("litkit-cancel")
        button.on_click(lambda _button: self._on_cancel(request_id, button))
        return widgets.HBox([label, button])

    # -- callbacks (on the kernel's comm thread) --------------------------------------------------

    def _on_cancel(self, request_id: str, button: widgets.Button) -> None:
        with self._lock:
            button.disabled = True
            button.description = "Cancelling"
        if self._cancel is not None:
            self._cancel(request_id, CANCEL_REASON)

    def _on_stop(self, _button: widgets.Button) -> None:
        with self._lock:
            self._stop_button.disabled = True
            self._stop_button.description = "Stopping"
        if self._stop is not None:
            self._stop()


def _charts() -> Any:
    """The browser-drawn charts, or None without anywidget (the figures stay as text)."""
    try:
        from .charts import Charts  # anywidget only where a dashboard is shown
    except ImportError:
        return None
    return Charts()


def _control_panel(control: dict[str, str] | None, part: str) -> Any:
    """The browser's ``part`` of the buttons for ``control`` (see ``ControlPanel``), or None (no
    control paths, or no anywidget)."""
    if control is None:
        return None
    try:
        from .controls import ControlPanel  # anywidget only where a dashboard has control paths
    except ImportError:
        logger.info("anywidget is not installed: the dashboard's buttons go through the kernel (pip install 'litkit[dashboard]')")
        return None
    panel = ControlPanel(control=dict(control), part=part)
    panel.add_class("litkit-control-panel")
    return panel


def _more_text(live: int) -> str:
    """The line under the browser's Cancel rows (set as text)."""
    return more_requests_text(live, MAX_CANCEL_ROWS)


def _more_html(live: int) -> str:
    """The same line for the ipywidgets rows."""
    text = _more_text(live)
    return f"<div style='font-size:11px;color:#57606a'>{html.escape(text)}</div>" if text else ""


def _close_all(widget: widgets.Widget) -> None:
    for child in getattr(widget, "children", ()):
        _close_all(child)
    widget.close()
