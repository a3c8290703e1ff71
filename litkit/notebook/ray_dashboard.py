"""The live view of an application on Ray Serve: an ipywidgets widget over ``RayServer.status()``.

What Ray Serve's status has, and no more: the application's status and Ray's message, each
deployment with the paths it serves and its replicas by state, the proxies, the URL, and Stop.
The local dashboard's per-request Cancel, worker table, request counts, charts and worker output
have no counterpart in ``serve.status()`` and are not shown (the widget says where Ray keeps
them). As in ``litkit.notebook.dashboard``, a daemon thread (``litkit-ray-dashboard-<name>``)
polls the snapshot, once a second by default (each is a call to Serve's controller), and sets only
the values that changed. Stop is an ipywidgets button: its click runs in the kernel, on the thread
that handles comm messages (the main thread on ipykernel 6, so once the running cell ends).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

import ipywidgets as widgets

from .formatting import render_header, render_ray_application, render_ray_deployments
from .refresher import Refresher

__all__ = ["RayDashboard", "DEFAULT_RAY_INTERVAL_S"]

logger = logging.getLogger("litkit.notebook.ray_dashboard")

DEFAULT_RAY_INTERVAL_S = 1.0


class RayDashboard(widgets.VBox):
    """A Ray Serve application's live view: the header with the URL and state, the application's
    status and replicas, its deployments, and Stop.

    Args:
        status: returns a ``RayServer.status()``-shaped snapshot; called from the refresh thread.
        title: the API's name(s), shown in the header.
        endpoint: the URL to show (with the paths after it when there are several).
        link: where the header link points.
        stop: stops the application (``RayServer.stop``).
        interval: seconds between refreshes (at least 0.1).
        start: start the refresh thread now (``refresh()`` can also be called by hand).
    """

    def __init__(self, status: Callable[[], dict[str, Any]], *, title: str, endpoint: str, link: str, stop: Callable[[], Any],
                 interval: float = DEFAULT_RAY_INTERVAL_S, start: bool = True) -> None:
        self._refresher = Refresher()  # close() (also called from __del__) needs these even if __init__ fails
        self._lock = threading.RLock()
        super().__init__()
        if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 0.1:
            raise ValueError(f"interval must be at least 0.1 seconds (each refresh asks Ray Serve's controller), got {interval!r}")
        self._status = status
        self._title, self._endpoint, self._link = title, endpoint, link
        self._stop = stop
        self._interval = float(interval)
        self._shown: dict[str, str] = {}
        self.refreshes = 0
        self.state = "serving"
        self._sections = {name: widgets.HTML() for name in ("header", "application", "deployments")}
        self._stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop", tooltip="delete the Ray Serve application")
        self._stop_button.add_class("litkit-stop")
        self._stop_button.on_click(self._on_stop)
        self.children = (widgets.HBox([self._sections["header"], self._stop_button]), self._sections["application"], self._sections["deployments"])
        self.add_class("litkit-dashboard")
        self.add_class("litkit-ray-dashboard")
        self.refresh()
        if start and self.state != "stopped":
            self._refresher.start(f"litkit-ray-dashboard-{title}", self._interval, self.refresh, lambda: self.state == "stopped", logger)

    def refresh(self, snapshot: dict[str, Any] | None = None, resend: bool = False) -> bool:
        """Show ``snapshot`` (by default a fresh ``status()``); True if anything on screen changed.
        ``resend`` sends every value even if unchanged (see ``finish``)."""
        if snapshot is None:
            snapshot = self._status()
        self.refreshes += 1
        state = str(snapshot.get("state", "?"))
        sections = {
            "header": render_header(self._title, state, self._endpoint, self._link),
            "application": render_ray_application(snapshot),
            "deployments": render_ray_deployments(list(snapshot.get("deployments", []))),
        }
        with self._lock:
            self.state = state
            changed = {name: text for name, text in sections.items() if self._shown.get(name) != text}
            for name, text in changed.items():
                self._sections[name].value = text
            if resend:
                for name in sections.keys() - changed.keys():
                    self._sections[name].send_state("value")
            stopped = state == "stopped" and not (self._stop_button.disabled and self._stop_button.description == "Stopped")
            if stopped:
                with self._stop_button.hold_sync():
                    self._stop_button.description = "Stopped"
                    self._stop_button.disabled = True
            elif resend:
                self._stop_button.send_state(["description", "disabled"])
            self._shown.update(changed)
        return bool(changed) or stopped

    def finish(self) -> None:
        """Stop refreshing after showing the latest snapshot, sent again in full (a headless run
        records only what is sent while a cell runs). Called by ``RayServer.stop()``."""
        self._refresher.finish(lambda: self.refresh(resend=True), "the litkit Ray dashboard", logger)

    def close(self) -> None:
        """Stop refreshing and close the widget and its children."""
        self._refresher.halt()
        with self._lock:
            for child in list(self.children):
                for grandchild in getattr(child, "children", ()):
                    grandchild.close()
                child.close()
            super().close()

    def _on_stop(self, _button: widgets.Button) -> None:
        with self._lock:
            self._stop_button.disabled = True
            self._stop_button.description = "Stopping"
        self._stop()
