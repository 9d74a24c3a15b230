"""The playground page: served files, and the page itself in a real headless Chromium."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import LiveServer, start_server, stop_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def test_page_and_its_files_are_served(client: Any) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/playground.js">' in page.text
    assert client.get("/static/playground.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/playground.css").headers["content-type"].startswith("text/css")
    for name in ("index.html", "..%2Fsettings.py", "nope.js"):
        response = client.get(f"/static/{name}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


@pytest.fixture(scope="module")
def browser_page(live_server: LiveServer) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(live_server.url + "/")
            page.wait_for_function("document.querySelector('#model').options.length > 0")
            yield page
            assert errors == [], errors
        finally:
            browser.close()


def test_models_are_listed(browser_page: Any) -> None:
    options = browser_page.eval_on_selector_all(
        "#model option", "els => els.map(e => [e.value, e.disabled])"
    )
    assert ["tiny", False] in options and ["broken", True] in options
    assert browser_page.input_value("#model") == "tiny"


def test_generation_streams_into_the_page(browser_page: Any, live_server: LiveServer) -> None:
    page = browser_page
    page.fill("#prompt", "alpha ")
    page.fill("#max-chars", "400")
    page.fill("#temperature", "0")
    page.click("#generate")
    page.wait_for_function(
        "document.querySelector('#generate-status').dataset.state === 'done'", timeout=30_000
    )
    expected = httpx.post(
        live_server.url + "/v1/generate",
        json={"prompt": "alpha ", "max_chars": 400, "temperature": 0},
        timeout=60,
    ).json()["completions"][0]["text"]
    assert page.text_content("#output-text") == expected
    assert page.text_content("#output-prompt") == "alpha "
    # it arrived as a stream of several events, not one reply
    assert int(page.get_attribute("#generate-status", "data-chunks")) > 1
    assert "finished by length" in page.text_content("#generate-status")


def test_heat_map_renders_with_hover_details(browser_page: Any, tmp_path: Path) -> None:
    page = browser_page
    text = "beta 2 ateb.\nalpha Q"
    page.fill("#score-text", text)
    page.click("#score")
    page.wait_for_function(
        f"document.querySelectorAll('#heatmap span').length === {len(text)}", timeout=30_000
    )
    colours = page.eval_on_selector_all(
        "#heatmap span", "els => els.map(e => getComputedStyle(e).backgroundColor)"
    )
    assert len(set(colours)) > 3  # surprisal differs from character to character
    bits = page.eval_on_selector_all("#heatmap span", "els => els.map(e => +e.dataset.bits)")
    assert max(bits) == bits[-1]  # "Q" is outside the vocabulary: the most surprising
    assert "bits/char" in page.text_content("#summary")
    page.hover("#heatmap span[data-offset='2']")
    page.wait_for_selector("#tooltip:not([hidden])")
    tooltip = page.text_content("#tooltip")
    assert "'t' at 2" in tooltip and "logprob -" in tooltip and "top alternatives" in tooltip
    if os.environ.get("CHARLM_SCREENSHOT_DIR"):
        page.screenshot(path=str(Path(os.environ["CHARLM_SCREENSHOT_DIR"]) / "playground.png"))


def test_stop_button_cancels_the_generation(browser_page: Any, live_server: LiveServer) -> None:
    page = browser_page
    page.fill("#prompt", "a")
    page.fill("#max-chars", "4096")
    page.fill("#temperature", "1")
    page.click("#generate")
    page.wait_for_function(
        "+document.querySelector('#generate-status').dataset.chunks > 3", timeout=30_000
    )
    page.click("#stop-button")
    page.wait_for_function(
        "document.querySelector('#generate-status').dataset.state === 'failed'", timeout=30_000
    )
    assert page.text_content("#generate-status") == "stopped"
    assert len(page.text_content("#output-text")) < 4096
    assert page.is_enabled("#generate")
    # the server saw the browser go away and stopped generating for it
    deadline = time.monotonic() + 30
    while active_generations(live_server) != 0:
        assert time.monotonic() < deadline, "generation kept running after Stop"
        time.sleep(0.05)


def active_generations(server: LiveServer) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith('charlm_generations_active{model="tiny"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_errors_are_shown(browser_page: Any) -> None:
    page = browser_page
    page.fill("#top-p", "5")
    page.click("#generate")
    page.wait_for_selector("#error:not([hidden])")
    assert "top_p" in page.text_content("#error")
    page.fill("#top-p", "1")


def test_page_works_with_an_api_key(browser_page: Any, models_dir: Path, tmp_path: Path) -> None:
    server = start_server(models_dir, tmp_path / "server.log", CHARLM_API_KEYS="page-key")
    page = browser_page.context.browser.new_page()
    try:
        page.goto(server.url + "/")
        page.wait_for_selector("#error:not([hidden])")
        assert "401" in page.text_content("#error") and "API key" in page.text_content("#error")
        page.fill("#api-key", "page-key")
        page.dispatch_event("#api-key", "change")
        page.wait_for_function("document.querySelector('#model').options.length > 0")
        assert page.input_value("#model") == "tiny"
        page.fill("#score-text", "alpha")
        page.click("#score")
        page.wait_for_function("document.querySelectorAll('#heatmap span').length === 5")
        assert page.is_hidden("#error")
    finally:
        page.close()
        stop_server(server)
