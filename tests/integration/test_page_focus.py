"""Keyboard use of the chat page in Chromium: where the focus goes after each action, and
code blocks that scroll sideways (issue 15, "Focus and keyboard")."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.integration.browser import expect, send
from tests.integration.conftest import RillServer, page_env, run_rill

pytestmark = pytest.mark.integration

SLOW = "sim?tokens=60&itl_ms=60"
SHORT = "sim?tokens=3"
CODE = "sim?itl_ms=5&text=" + quote("```python\n" + "x_" * 60 + "\n```\n")


@pytest.fixture(scope="module")
def keys_rill(simulator) -> Iterator[RillServer]:
    env = page_env(simulator, RILL_MODEL=SHORT, RILL_MODELS=f"{SHORT},{SLOW},{CODE}")
    with run_rill(env, "page-focus") as server:
        yield server


def focused(page) -> str:
    """The focused element: its aria-label, else #id, else its text; "body" for none."""
    return page.evaluate("""() => {
        const el = document.activeElement;
        if (!el || el === document.body) return "body";
        return el.getAttribute("aria-label") || (el.id && `#${el.id}`) || el.textContent.trim();
    }""")


def ask_and_wait(page, text: str) -> None:
    send(page, text)
    expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=15_000)


def test_focus_stays_in_the_composer_after_send_and_stop(keys_rill, page) -> None:
    page.goto(keys_rill.url)
    page.select_option("#model", SLOW)
    page.fill("#prompt", "A long answer")
    page.focus("#send")
    page.keyboard.press("Enter")
    expect(page.locator(".turn-assistant .turn-text")).to_have_text(re.compile(r"tok3\b"))
    assert focused(page) == "#prompt", "Send is disabled while the answer streams"
    page.focus("#stop")
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text("Stopped.")
    assert focused(page) == "#prompt"


def test_focus_returns_to_the_conversation_after_rename(keys_rill, page) -> None:
    page.goto(keys_rill.url)
    ask_and_wait(page, "First title")
    page.get_by_role("button", name="Rename “First title”").focus()
    page.keyboard.press("Enter")
    assert focused(page) == "Conversation title"
    page.keyboard.type("Second title")
    page.keyboard.press("Enter")
    expect(page.locator(".conversation-title")).to_have_text("Second title")
    assert focused(page) == "Rename “Second title”"
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    expect(page.locator(".conversation-title")).to_have_text("Second title")
    assert focused(page) == "Rename “Second title”"


def test_focus_goes_to_a_neighbour_after_delete(keys_rill, page) -> None:
    page.goto(keys_rill.url)
    for title in ("Oldest", "Middle", "Newest"):
        page.click("#new-chat")
        ask_and_wait(page, title)
    page.get_by_role("button", name="Delete “Middle”").focus()
    page.keyboard.press("Enter")
    assert focused(page) == "Cancel"
    page.keyboard.press("Enter")
    assert focused(page) == "Delete “Middle”", "Cancel gives the focus back"
    page.keyboard.press("Enter")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")
    expect(page.locator(".conversation-title")).to_have_text(["Newest", "Oldest"])
    assert focused(page).startswith("Oldest"), "the next conversation down"
    for title in ("Oldest", "Newest"):
        page.get_by_role("button", name=f"Delete “{title}”").focus()
        page.keyboard.press("Enter")
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Enter")
    expect(page.locator(".conversation")).to_have_count(0)
    assert focused(page) == "#new-chat", "none left"


def test_a_code_block_that_scrolls_sideways_is_reached_and_scrolled_by_keyboard(
        keys_rill, browser) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740})
    page = context.new_page()
    page.goto(keys_rill.url)
    page.select_option("#model", CODE)
    ask_and_wait(page, "Some code")
    code = page.get_by_role("group", name="Code: python")
    expect(code).to_have_attribute("tabindex", "0")
    assert code.evaluate("el => el.scrollWidth > el.clientWidth"), "it scrolls sideways"
    page.get_by_role("button", name="Copy code").focus()
    page.keyboard.press("Tab")
    assert code.evaluate("el => el === document.activeElement")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("el => el.scrollLeft > 0", arg=code.element_handle(), timeout=2000)
    context.close()


def test_focus_after_opening_a_conversation_from_the_list_or_the_drawer(keys_rill,
                                                                       browser) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(keys_rill.url)
    for title in ("Older", "Newer"):
        page.click("#new-chat")
        ask_and_wait(page, title)
    page.locator(".conversation-open", has_text="Older").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".turn-user .turn-text")).to_have_text("Older")
    assert focused(page).startswith("Older"), "the list is drawn anew under the focus"
    page.set_viewport_size({"width": 375, "height": 740})
    page.focus("#toggle-sidebar")
    page.keyboard.press("Enter")
    page.locator(".conversation-open", has_text="Newer").focus()
    page.keyboard.press("Escape")
    assert focused(page) == "Conversations", "closing the drawer: back to its button"
    page.keyboard.press("Enter")
    page.locator(".conversation-open", has_text="Newer").focus()
    page.keyboard.press("Enter")
    expect(page.locator(".turn-user .turn-text")).to_have_text("Newer")
    assert focused(page) == "#prompt", "the drawer closed over the conversation"
    context.close()
