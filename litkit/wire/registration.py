"""What a litkit server tells the Jupyter server it runs under, so that litkit's Jupyter route
(``litkit.jupyter``) relays browsers to it: one small JSON file per server.

litkit's Jupyter server extension, when it loads, makes a folder of its own in Jupyter's runtime
dir (mode 0700) and puts two variables in its environment, which every kernel it starts inherits:

* ``LITKIT_JUPYTER_ROUTE``: the route's path as the browser sees it, e.g. ``/user/ada/litkit``;
* ``LITKIT_JUPYTER_REGISTRY``: that folder.

A litkit server started in such a kernel writes ``<port>.json`` there (``{"port", "pid", "url",
"max_body_sizes"}``, the last ``{endpoint path: max_body_size}``, so the route answers an
over-limit body 413 itself rather than race the server's own 413 and close) and removes it when
it stops, or when the server's own process dies. The extension relays ``<route>/<port>/...`` only while that file
exists, names a live process that is one of its kernels (or a descendant of one), and, on Linux,
that process listens on the port. Standard library only: the server side (a kernel) writes these
files, the extension (the Jupyter server's process) reads them.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import dataclass
from typing import Mapping

__all__ = [
    "ROUTE_ENV", "REGISTRY_ENV", "Registration", "make_registry_folder", "route_and_registry", "registration_path", "write_registration",
    "read_registration", "remove_registration",
]

ROUTE_ENV = "LITKIT_JUPYTER_ROUTE"
REGISTRY_ENV = "LITKIT_JUPYTER_REGISTRY"


@dataclass(frozen=True)
class Registration:
    """A litkit server's claim to a port: ``url`` (its loopback base URL) is served by process ``pid``."""

    port: int
    pid: int
    url: str
    max_body_sizes: tuple[tuple[str, int], ...] = ()  # (endpoint path, its max_body_size)

    def max_body_size(self, path: str) -> int | None:
        """The largest body the server takes at ``path`` (the largest of any endpoint for a path
        it does not serve, which it answers 404 anyway); None if the registration does not say."""
        limits = dict(self.max_body_sizes)
        return limits.get(path, max(limits.values(), default=None))


def route_and_registry(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(route path without a trailing slash, registry folder) set by the extension, or None."""
    route = environ.get(ROUTE_ENV, "").strip()
    folder = environ.get(REGISTRY_ENV, "").strip()
    if not route or not folder:
        return None
    return "/" + route.strip("/"), folder


def registration_path(folder: str, port: int) -> str:
    return os.path.join(folder, f"{int(port)}.json")


def write_registration(folder: str, registration: Registration) -> str:
    """Write ``registration`` into ``folder`` atomically (a reader never sees half a file); return its path.

    Raises:
        OSError: the folder is missing or not writable.
    """
    descriptor, temporary = tempfile.mkstemp(prefix=f".{registration.port}-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(descriptor, "w") as file:
            json.dump({"port": registration.port, "pid": registration.pid, "url": registration.url, "max_body_sizes": dict(registration.max_body_sizes)}, file)
        path = registration_path(folder, registration.port)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return path


def read_registration(folder: str, port: int) -> Registration | None:
    """The registration of ``port`` in ``folder``; None when there is none or it is not one of ours."""
    try:
        with open(registration_path(folder, port)) as file:
            data = json.load(file)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    found_port, pid, url = data.get("port"), data.get("pid"), data.get("url")
    if found_port != port or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not isinstance(url, str):
        return None
    limits = data.get("max_body_sizes") or {}
    if not isinstance(limits, dict) or not all(isinstance(k, str) and type(v) is int and v > 0 for k, v in limits.items()):
        return None
    return Registration(port, pid, url, tuple(sorted(limits.items())))


def remove_registration(folder: str, port: int, pid: int) -> None:
    """Remove the registration of ``port`` if process ``pid`` wrote it (another may have taken the port since)."""
    registration = read_registration(folder, port)
    if registration is not None and registration.pid == pid:
        try:
            os.unlink(registration_path(folder, port))
        except OSError:
            pass


def make_registry_folder(folder: str) -> str:
    """Make ``folder`` (mode 0700), or take it if it is already there and this user's alone.

    A registration in it makes the route relay to a port, so a folder another user made (or could
    write to, or a symlink to one) would let them choose where the route sends browsers and their
    credentials (issue 25).

    Raises:
        PermissionError: the folder exists but is a symlink, not a folder, not owned by this user,
            or open to others; the message says to remove it.
    """
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    found = os.lstat(folder)
    problem = (
        "is a symlink" if stat.S_ISLNK(found.st_mode)
        else "is not a folder" if not stat.S_ISDIR(found.st_mode)
        else f"belongs to uid {found.st_uid}, not {os.getuid()}" if found.st_uid != os.getuid()
        else f"has mode {stat.S_IMODE(found.st_mode):o}: others may read or write it" if found.st_mode & 0o077
        else None
    )
    if problem is not None:
        raise PermissionError(f"litkit's route registry {folder} {problem}; remove it and restart the Jupyter server (litkit makes it, mode 0700)")
    return folder
