"""Debian's chromium driven by Playwright, for the tests that open litkit's page (``/``) in a browser.

``chromium()`` launches ``/usr/bin/chromium`` headless (Playwright's own browser download is never
used); without it the test is skipped, unless ``LITKIT_REQUIRE_BROWSER=1`` (``.ci/run``) makes that a
failure. ``Recorder`` notes every request a page makes, so a test can assert that none left the
origin it expects, and any script error or Content-Security-Policy complaint.
"""

from __future__ import annotations

import contextlib
import os
import urllib.parse
from typing import Any, Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing; install Debian's chromium package (.ci/run does: apt-get install -y chromium)"
        if os.environ.get("LITKIT_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]' installs playwright")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


def origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Recorder:
    """Every request ``page`` makes, and the script errors and policy complaints it logs."""

    def __init__(self, page: Any) -> None:
        self.urls: list[str] = []
        self.problems: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("console", lambda message: self.problems.append(message.text) if "Content Security Policy" in message.text else None)

    def assert_all_within(self, expected: str) -> None:
        foreign = [url for url in self.urls if origin(url) != expected]
        assert self.urls and foreign == [], f"the page reached beyond {expected}: {foreign}"
        assert self.problems == []
