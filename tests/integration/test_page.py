"""The chat page in a real Chromium (Debian's), against gunicorn and the simulator."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rill.simulator import expected_text
from tests.integration.conftest import ARTIFACTS, RillServer, relay_env, run_rill

pytestmark = pytest.mark.integration

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def paced_rill(simulator) -> Iterator[RillServer]:
    # The default orphan grace: Stop must cancel on the server, not merely disconnect.
    env = relay_env(simulator, RILL_MODEL="sim?tokens=30&itl_ms=60&ttft_ms=200",
                    RILL_ORPHAN_GRACE_SECONDS="30")
    with run_rill(env, "page") as server:
        yield server


@pytest.fixture
def page(browser) -> Iterator:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.console_messages = []  # type: ignore[attr-defined]
    page.on("console", lambda m: page.console_messages.append(m.text))
    yield page
    context.close()


def answer_text(page) -> str:
    return page.locator(".turn-assistant .turn-text").last.inner_text()


def test_answer_streams_into_the_page_token_by_token(paced_rill, page) -> None:
    page.goto(paced_rill.url)
    page.fill("#prompt", "Tell me something")
    page.keyboard.press("Enter")
    expect(page.locator(".turn-assistant .turn-text")).to_have_text(re.compile(r"\S"))
    partial = answer_text(page)
    expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=15_000)
    final = answer_text(page)
    assert partial != final and final.startswith(partial), "text grew over time"
    assert final == expected_text(30).strip() or final == expected_text(30)
    assert page.locator(".turn-user .turn-text").inner_text() == "Tell me something"
    assert not [m for m in page.console_messages if "Content Security Policy" in m]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-desktop.png"))


def test_stop_ends_the_answer_and_keeps_the_partial_text(paced_rill, page, simulator) -> None:
    page.goto(paced_rill.url)
    page.fill("#prompt", "Go on")
    page.click("#send")
    expect(page.locator(".turn-assistant .turn-text")).to_have_text(re.compile(r"tok3"))
    page.click("#stop")
    expect(page.locator("#status")).to_have_text("Stopped.")
    partial = answer_text(page)
    assert 0 < len(partial) < len(expected_text(30).strip())
    deadline = time.monotonic() + 2
    while True:
        mine = [r for r in simulator.requests() if r["body"]["messages"][-1]["content"] == "Go on"]
        if mine[-1]["outcome"] == "client_closed":
            break
        assert time.monotonic() < deadline, "the simulator never saw its upstream closed"
        time.sleep(0.02)
    assert mine[-1]["tokens_sent"] < 30


def test_error_before_the_stream_shows_its_message(simulator, browser) -> None:
    env = relay_env(simulator, RILL_MODEL="sim?fault=status&status=401")
    with run_rill(env, "page-error") as server:
        page = browser.new_page()
        page.goto(server.url)
        page.fill("#prompt", "Hi")
        page.keyboard.press("Enter")
        expect(page.locator("#status")).to_have_class(re.compile("status-error"))
        assert "credentials" in page.locator("#status").inner_text()
        page.close()


def test_page_works_at_375_px_in_dark_mode(paced_rill, browser) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740},
                                  color_scheme="dark")
    page = context.new_page()
    page.goto(paced_rill.url)
    page.fill("#prompt", "Hi")
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=15_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=str(ARTIFACTS / "page-375-dark.png"))
    context.close()
