"""axe-core finds nothing on the chat page in Chromium: at 1280 and 375 px, light and dark,
empty, mid-stream, after the answer and after Stop, with the conversation list's drawer, rename
and delete confirmation open (issue 15, "Focus and keyboard"); and with several conversations
streaming (the list marking them), a question being edited and versions shown, streaming and
settled.

axe-core is vendored for the tests only (tests/vendor/, by ``scripts/vendor-frontend``) and
injected as an init script, which the page's nonce-only CSP does not govern."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.integration.browser import AXE, expect, send, violations
from tests.integration.conftest import RillServer, relay_env, run_rill

pytestmark = pytest.mark.integration

# Markdown with what an answer holds: a heading, a link, inline code, a code block, a
# table, a list; reasoning before it; slow enough to check mid-stream.
TEXT = ("## Plan\n[docs](https://example.com) `x`\n```python\ndef f():\n  return 1 # one\n```\n"
        "|a|b|\n|-|-|\n|1|2|\n\n- one\n\nDone now.")
MODEL = "sim?shape=reasoning&reasoning_tokens=4&itl_ms=120&text=" + quote(TEXT, safe="/:()[]`|-")


@pytest.fixture(scope="module")
def axe_rill(simulator) -> Iterator[RillServer]:
    with run_rill(relay_env(simulator, RILL_MODEL=MODEL), "page-axe") as server:
        yield server


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 375])
def test_axe_finds_no_violation(axe_rill, browser, width, scheme) -> None:
    assert AXE.exists(), "tests/vendor/axe.min.js: run scripts/vendor-frontend"
    context = browser.new_context(viewport={"width": width, "height": 800},
                                  color_scheme=scheme)
    context.add_init_script(path=str(AXE))
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    page.goto(axe_rill.url)
    assert page.evaluate("typeof axe") == "object"
    assert violations(page) == [], "the empty page"
    send(page, "Plan it")
    answer = page.locator(".turn-assistant .turn-text").last
    expect(answer.locator("pre code")).to_contain_text("def", timeout=15_000)
    assert page.locator(".turn-assistant[aria-busy='true']").count() == 1
    found = violations(page)
    assert found == [], "mid-stream:\n" + "\n".join(found)
    expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=20_000)
    found = violations(page)
    assert found == [], "after the answer:\n" + "\n".join(found)
    page.locator(".thinking summary").click()  # the reasoning shown
    found = violations(page)
    assert found == [], "reasoning open:\n" + "\n".join(found)
    send(page, "Again")
    expect(page.locator(".turn-assistant").nth(1)).to_contain_text("Plan", timeout=15_000)
    page.click("#stop")
    expect(page.locator("#status")).to_have_text("Stopped.")
    found = violations(page)
    assert found == [], "stopped:\n" + "\n".join(found)
    if width < 700:  # the conversation list is a drawer
        page.click("#toggle-sidebar")
        expect(page.locator("#conversations")).to_be_in_viewport()
        found = violations(page)
        assert found == [], "drawer open:\n" + "\n".join(found)
    page.get_by_role("button", name="Rename “Plan it”").click()
    found = violations(page)
    assert found == [], "renaming:\n" + "\n".join(found)
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Delete “Plan it”").click()
    found = violations(page)
    assert found == [], "delete confirmation:\n" + "\n".join(found)
    assert not [m for m in console if "Content Security Policy" in m], json.dumps(console)
    context.close()


FAST = "sim?tokens=6&itl_ms=20"
SLOW = "sim?tokens=200&itl_ms=60"  # still streaming through the checks


@pytest.fixture(scope="module")
def versions_rill(simulator) -> Iterator[RillServer]:
    env = relay_env(simulator, RILL_MODEL=FAST, RILL_MODELS=f"{FAST},{SLOW}")
    with run_rill(env, "page-axe-versions") as server:
        yield server


def no_violations(page, state: str) -> None:
    found = violations(page)
    assert found == [], f"{state}:\n" + "\n".join(found)


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 375])
def test_axe_finds_no_violation_with_conversations_streaming_and_versions(
        versions_rill, browser, width, scheme) -> None:
    context = browser.new_context(viewport={"width": width, "height": 800},
                                  color_scheme=scheme)
    context.add_init_script(path=str(AXE))
    page = context.new_page()
    page.goto(versions_rill.url)
    status = page.locator("#status")
    send(page, "Versions")
    expect(status).to_have_text(re.compile("^Done"), timeout=15_000)
    question = page.locator("#transcript > .turn-user").first
    question.get_by_role("button", name="Edit message").click()
    no_violations(page, "a question being edited")
    page.keyboard.press("Enter")
    expect(status).to_have_text(re.compile("^Done"), timeout=15_000)
    page.select_option("#model", SLOW)
    page.click("#regenerate")  # the answer's second version, streaming
    answer = page.locator("#transcript > .turn-assistant").last
    expect(answer.locator(".version-label")).to_have_text("2/2")
    expect(answer).to_have_attribute("aria-busy", "true")
    drawer = width < 700  # the conversation list is a drawer
    if drawer:
        page.click("#toggle-sidebar")
    page.click("#new-chat")
    send(page, "Another")
    expect(page.locator("#transcript .turn-assistant .turn-text").last).to_have_text(
        re.compile(r"tok1\b"), timeout=15_000)
    if drawer:
        page.click("#toggle-sidebar")
        expect(page.locator("#conversations")).to_be_in_viewport()
    expect(page.locator("#conversation-list .conversation.live")).to_have_count(2)
    no_violations(page, "two conversations streaming, the list marking them")
    page.locator("#conversation-list .conversation-open").last.click()
    expect(question.locator(".version-label")).to_have_text("2/2")
    expect(answer).to_have_attribute("aria-busy", "true")
    no_violations(page, "versions, the answer's streaming")
    page.click("#stop")
    expect(status).to_have_text("Stopped.")
    answer.get_by_role("button", name="Previous version").click()
    expect(answer.locator(".version-label")).to_have_text("1/2")
    no_violations(page, "versions, settled")
    context.close()
