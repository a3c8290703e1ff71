"""The page at ``/`` in a real browser: Debian's chromium (``/usr/bin/chromium``) driven by Playwright,
against a real server with real workers (issue 23).

A teammate opens the server's URL: the page lists the endpoints, runs a streaming one and shows
its chunks while the stream still runs, Stop hangs up and the worker's ``finally`` runs, a JSON
endpoint's answer is shown formatted, an OpenAI chat endpoint as a transcript; on a server with an
API key the page asks for the key and never puts it in a URL. Every request the page makes is
recorded, and none may leave the server's origin. Without chromium the tests are skipped, unless
``LITKIT_REQUIRE_BROWSER=1`` (``.ci/run``). ``LITKIT_PAGE_SCREENSHOT=path`` also saves the
screenshot the README shows (``docs/img/page.png``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import cloudpickle
import pytest
from pydantic import BaseModel

import apis
import litkit
from browsers import Recorder, chromium, origin
from conftest import Events, wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SCREENSHOT_ENV = "LITKIT_PAGE_SCREENSHOT"
KEY = "browser-page-key-0123456789"
UI_S = 20.0  # a page action and its answer, on two busy cores

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


class Question(BaseModel):
    text: str = "what is litkit?"
    words: int = 3


class Answerer(litkit.LitAPI):
    """A JSON endpoint whose request model gives the page its example body."""

    def decode_request(self, request: Question) -> Question:
        return request

    def predict(self, question: Question) -> dict[str, Any]:
        return {"answer": " ".join(question.text.split()[: question.words]), "markup": "<b>not bold</b>"}


class Upload(litkit.LitAPI):
    """Reads an HTML form: a note and a file."""

    def predict(self, form: Any) -> dict[str, Any]:
        upload = form["file"]
        return {"note": form["note"], "filename": upload.filename, "size": len(upload.file.read())}


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def _section(page: Any, path: str) -> Any:
    return page.locator(f'section.endpoint[data-path="{path}"]')


def test_a_teammate_runs_stops_and_reads_each_endpoint(serve, browser, events: Events, tmp_path: Path) -> None:
    chat_events = Events(tmp_path / "chat-events.jsonl")
    server = serve({
        "/ask": Answerer(),
        "/tokens": apis.Ticker(events.path),
        "/chat": litkit.Endpoint(apis.ChatWords(chat_events.path, interval=0.02), spec=litkit.specs.OpenAIChat()),
        "/upload": Upload(),
    })
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    recorder = Recorder(page)
    page.goto(server.url + "/")
    tokens = _section(page, "/tokens")
    tokens.wait_for(timeout=UI_S * 1000)
    assert page.locator("section.endpoint").count() == 4
    assert not page.locator("#key-form").is_visible()  # no key on this server

    # The JSON endpoint: the editor starts from the pydantic model; the answer is shown formatted, as text.
    ask = _section(page, "/ask")
    assert '"text": "what is litkit?"' in ask.locator("textarea.body").input_value()
    ask.locator("button.run").click()
    wait_until(lambda: ask.get_attribute("data-state") == "completed", UI_S, "the JSON call to complete", interval=0.05)
    answer = ask.locator("pre.json").inner_text()
    assert '"answer": "what is litkit?"' in answer and "\n" in answer  # indented, one key a line
    assert ask.locator("pre.json b").count() == 0  # markup in a response stays text
    assert re.search(r"^200", ask.locator(".meta .status").inner_text())
    assert ask.locator(".meta .request-id").inner_text().startswith("request id ")
    # Its snippets, copied as they are, make the same call.
    ask.locator("details.snippets summary").click()
    for kind in ("client", "requests"):
        code = ask.locator(f"pre.{kind}").inner_text()
        ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0 and "what is litkit?" in ran.stdout, (code, ran.stderr)
    ask.locator("details.snippets summary").click()  # closed again, for a shorter screenshot

    # A form with a file, picked in the page's form.
    upload = _section(page, "/upload")
    upload.locator("select.mode").select_option("form")
    upload.locator(".field-name").first.fill("note")
    upload.locator(".field-value").first.fill("<hello>")
    picked = tmp_path / "picked.bin"
    picked.write_bytes(b"x" * 1234)
    upload.locator(".field-file").first.set_input_files(str(picked))
    upload.locator("button.run").click()
    wait_until(lambda: upload.get_attribute("data-state") == "completed", UI_S, "the form call to complete", interval=0.05)
    sent = upload.locator("pre.json").inner_text()
    assert '"filename": "picked.bin"' in sent and '"size": 1234' in sent and '"note": "<hello>"' in sent

    # A long stream: chunks appear while it runs; Stop hangs up, and the generator's finally runs.
    tokens.locator("textarea.body").fill('{"n": 100000, "interval": 0.05, "tag": "page"}')
    tokens.locator("button.run").click()
    wait_until(lambda: tokens.locator("ol.chunks li").count() >= 3, UI_S, "three chunks on the page", interval=0.05)
    assert tokens.get_attribute("data-state") == "running"
    assert events.named("finally") == []  # the stream still runs while its chunks show
    assert tokens.locator("ol.chunks li").first.inner_text() == '{"i":0}'
    assert "first chunk" in tokens.locator(".meta").inner_text()
    tokens.locator("button.stop").click()
    wait_until(lambda: tokens.get_attribute("data-state") == "stopped", UI_S, "the page to say it stopped", interval=0.05)
    outcome = tokens.locator(".outcome").inner_text()
    shown = int(re.fullmatch(r"stopped after (\d+) chunks?", outcome).group(1))
    assert shown >= 3
    events.wait_for("finally", deadline_s=UI_S)  # the worker closed the generator
    assert events.named("generator_exit"), "the generator was closed at its yield, as on a client hang-up"
    left = wait_until(lambda: [r for r in server.status()["recent"] if r["path"] == "/tokens" and r["state"] == "cancelled"], UI_S, "the server to count the stream cancelled")
    assert left[0]["chunks"] >= shown

    # The snippets say how to make the same call, with the body in the editor.
    snippets = tokens.locator("details.snippets")
    snippets.locator("summary").click()
    assert snippets.locator("pre.curl").inner_text().startswith(f"curl -N -X POST '{server.url}/tokens'")
    assert "client.stream({\"n\": 100000" in snippets.locator("pre.client").inner_text()
    assert "requests.post(" in snippets.locator("pre.requests").inner_text()

    # The OpenAI chat endpoint: a transcript, the assistant's words arriving into one message.
    chat = _section(page, "/chat/v1/chat/completions")
    chat.locator("textarea.body").fill('{"model": "m", "messages": [{"role": "user", "content": "hello <i>there</i> friend"}], "stream": true}')
    chat.locator("button.run").click()
    wait_until(lambda: chat.get_attribute("data-state") == "completed", UI_S, "the chat stream to complete", interval=0.05)
    assert chat.locator(".message.user .content").inner_text() == "hello <i>there</i> friend"
    assert chat.locator(".message.assistant .content").inner_text() == "hello <i>there</i> friend"
    assert chat.locator(".message i").count() == 0
    chat_events.wait_for("finally")

    tokens.scroll_into_view_if_needed()
    screenshot = tmp_path / "page.png"
    page.screenshot(path=str(screenshot), full_page=True)
    if os.environ.get(SCREENSHOT_ENV):
        shutil.copy(screenshot, os.environ[SCREENSHOT_ENV])
    recorder.assert_all_within(origin(server.url))


def test_on_a_keyed_server_the_page_asks_for_the_key_and_keeps_it_out_of_urls(serve, browser) -> None:
    server = serve(apis.Doubler(), api_key=KEY)
    page = browser.new_page()
    recorder = Recorder(page)
    page.goto(server.url + "/")
    page.locator("#key-form").wait_for(timeout=UI_S * 1000)
    assert "needs its API key" in page.locator("#notice").inner_text()
    assert page.locator("section.endpoint").count() == 0  # nothing is told without the key
    page.locator("#key").fill(KEY)
    page.locator("#key-form button[type=submit]").click()
    predict = _section(page, "/predict")
    predict.wait_for(timeout=UI_S * 1000)
    predict.locator("textarea.body").fill('{"input": 21}')
    predict.locator("button.run").click()
    wait_until(lambda: predict.get_attribute("data-state") == "completed", UI_S, "the keyed call to complete", interval=0.05)
    assert '"output": 42' in predict.locator("pre.json").inner_text()
    predict.locator("details.snippets summary").click()
    assert '"X-API-Key: $LITKIT_API_KEY"' in predict.locator("pre.curl").inner_text()
    assert KEY not in predict.locator("details.snippets").inner_text()  # snippets name the key, never show it
    assert all(KEY not in url for url in recorder.urls)
    # A reload in the same tab keeps the key (sessionStorage), so the endpoints show at once.
    page.reload()
    _section(page, "/predict").wait_for(timeout=UI_S * 1000)
    # A wrong key is refused, and the page says so.
    page.locator("#key").fill("wrong-key-0123456789-abcdef")
    page.locator("#key-form button[type=submit]").click()
    wait_until(lambda: "refused this API key" in page.locator("#notice").inner_text(), UI_S, "the page to say the key is wrong", interval=0.05)
    recorder.assert_all_within(origin(server.url))
