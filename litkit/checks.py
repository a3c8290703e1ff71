"""Checks of option values shared by ``serve()`` (``litkit.server``) and ``ray_app()``
(``litkit.ray``): each raises a ``ValueError`` that names the option, says what it takes, and
shows the value given."""

from __future__ import annotations

from typing import Any

__all__ = ["check_batch_timeout", "check_int", "check_seconds"]


def check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int from {low} to {high}, got {value!r}")


def check_seconds(name: str, value: Any, alternative: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds{alternative}, got {value!r}")


def check_batch_timeout(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 3600:
        raise ValueError(f"batch_timeout must be a number of seconds from 0 to 3600 (e.g. 0.01), got {value!r}")
