"""Helpers of the chat page's tests (the ``browser`` and ``page`` fixtures are in conftest)."""

from __future__ import annotations

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


def answer_text(page) -> str:
    return page.locator(".turn-assistant .turn-text").last.inner_text()


def send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.keyboard.press("Enter")


# The conversations as stored (static/store.js: a key per turn, ordered by at, pair, n):
# {conversation id: [{role, content, status}]}.
STORED = """() => {
    const turns = [];
    for (let i = 0; i < localStorage.length; i += 1) {
        const key = localStorage.key(i);
        const turn = /^rill\\.(u\\.[^.]+\\.)?turn\\./.test(key);
        if (turn) turns.push(JSON.parse(localStorage.getItem(key)));
    }
    const byPair = (a, b) => (a.pair < b.pair ? -1 : a.pair > b.pair ? 1 : 0);
    turns.sort((a, b) => a.at - b.at || byPair(a, b) || a.n - b.n);
    const byId = {};
    for (const t of turns) {
        (byId[t.conversation] = byId[t.conversation] || []).push(
            {role: t.role, content: t.content, status: t.status || null});
    }
    return byId;
}"""


def stored(page) -> dict[str, list[dict]]:
    return page.evaluate(STORED)


def shown(page) -> list[dict]:
    """The transcript on screen: [{role, text, status}] (status: stopped, failed or None)."""
    return page.evaluate("""() => [...document.querySelectorAll('#transcript > .turn')].map(
        (li) => ({role: li.dataset.role, text: li.querySelector('.turn-text').innerText,
                  status: ['stopped', 'failed'].find((s) => li.classList.contains(s)) || null,
                  busy: li.getAttribute('aria-busy') === 'true'}))""")


def current_conversation(page) -> str | None:
    """The id of the conversation on screen (the sidebar's current one)."""
    item = page.locator("#conversation-list li.active")
    expect(item).to_have_count(1)
    return item.get_attribute("data-id")


def open_conversation(page, conversation: str) -> None:
    page.click(f'#conversation-list li[data-id="{conversation}"] .conversation-open')
