"""Helpers of the chat page's tests (the ``browser`` and ``page`` fixtures are in conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

# axe-core, vendored for the tests only by scripts/vendor-frontend; inject it with
# context.add_init_script(path=str(AXE)) (init scripts are not subject to the page's CSP).
AXE = Path(__file__).resolve().parents[1] / "vendor" / "axe.min.js"


def answer_text(page) -> str:
    return page.locator(".turn-assistant .turn-text").last.inner_text()


def send(page, text: str) -> None:
    page.fill("#prompt", text)
    page.keyboard.press("Enter")


def violations(page) -> list[str]:
    """axe's violations of the page as it is now: "rule (impact): targets: summary"."""
    found = page.evaluate("""async () => {
        const result = await axe.run(document, { resultTypes: ["violations"] });
        return result.violations.map((v) => `${v.id} (${v.impact}): ` + v.nodes.map(
            (n) => `${JSON.stringify(n.target)} ${n.failureSummary}`).join(" | "));
    }""")
    return list(found)


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
