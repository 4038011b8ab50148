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


# Every stored turn (static/store.js: a key per turn) and pick, read independently of the
# page's code: {"turns": {conversation: [turn]}, "picks": {conversation: {parent: child}}}.
# A turn of the format before versions has no parent: it follows the one before it in the
# order (at, pair, n) of those turns.
TREE = """() => {
    const turns = {};
    const picks = {};
    for (let i = 0; i < localStorage.length; i += 1) {
        const key = localStorage.key(i);
        const found = /^rill\\.(?:u\\.[^.]+\\.)?(turn|pick)\\.([^.]+)\\.([^.]+)$/.exec(key);
        if (!found) continue;
        const value = JSON.parse(localStorage.getItem(key));
        if (found[1] === 'turn') (turns[found[2]] = turns[found[2]] || []).push(value);
        else (picks[found[2]] = picks[found[2]] || {})[found[3]] = value.child;
    }
    const byPair = (a, b) => (a.pair < b.pair ? -1 : a.pair > b.pair ? 1 : 0);
    for (const list of Object.values(turns)) {
        const line = list.filter((t) => t.parent === undefined)
            .sort((a, b) => a.at - b.at || byPair(a, b) || a.n - b.n);
        line.forEach((t, i) => { t.parent = i ? line[i - 1].id : null; });
    }
    return {turns, picks};
}"""


def tree(page) -> tuple[dict[str, list[dict]], dict[str, dict[str, str]]]:
    """The stored turns by conversation ({id, role, content, status, parent, at, …}; the
    parent null for a first question), and the picks: {conversation: {parent id or "root":
    the version shown}}."""
    found = page.evaluate(TREE)
    return found["turns"], found["picks"]


def branch(turns: list[dict], picks: dict[str, str]) -> list[dict]:
    """The branch a conversation shows: from the root, the picked version of each turn (else
    its newest), each as {role, content, status, id, version: (n, of)}."""
    children: dict[str, list[dict]] = {}
    for turn in sorted(turns, key=lambda t: (t["at"], t["id"])):
        children.setdefault(turn["parent"] or "root", []).append(turn)
    shown, key = [], "root"
    while key in children:
        versions = children[key]
        chosen = next((t for t in versions if t["id"] == picks.get(key)), versions[-1])
        shown.append({"role": chosen["role"], "content": chosen["content"],
                      "status": chosen.get("status"), "id": chosen["id"],
                      "version": (versions.index(chosen) + 1, len(versions))})
        key = chosen["id"]
    return shown


def stored(page) -> dict[str, list[dict]]:
    """The conversations as stored, each the branch it shows: {id: [{role, content, status,
    id, version}]}."""
    turns, picks = tree(page)
    return {conversation: branch(found, picks.get(conversation, {}))
            for conversation, found in turns.items()}


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
