"""Two tabs and three conversations, driven at random (issue 15's acceptance): sends, stops,
reloads, switches between conversations, edits, regenerates and switches between versions in
an order a seed decides. After each run every tab shows what storage holds (the branch each
conversation shows, with its versions), no turn is lost or duplicated, and each answer is the
simulator's text (a stopped one a prefix of it)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

import pytest

from rill.simulator import expected_text
from tests.integration.browser import (
    current_conversation,
    expect,
    send,
    stored,
    tree,
)
from tests.integration.conftest import RillServer, page_env, run_rill

pytestmark = pytest.mark.integration

TOKENS = 20
FULL = expected_text(TOKENS)
SEEDS = range(20)
STEPS = 12
NEVER_STARTED = "Connection lost before the answer started. Please send again."


@pytest.fixture(scope="module")
def random_rill(simulator) -> Iterator[RillServer]:
    env = page_env(simulator, RILL_MODEL=f"sim?tokens={TOKENS}&itl_ms=40&ttft_ms=50")
    with run_rill(env, "page-tabs-random") as server:
        yield server


def click(page, selector: str) -> None:
    """A click event on the element, without Playwright's checks that it is visible, stable
    and on top (which take a second or two each on a busy machine)."""
    page.locator(selector).dispatch_event("click")


def sent(page, text: str) -> bool:
    """Send text from page; True if the page took it (False: refused, with its notice)."""
    send(page, text)
    if page.input_value("#prompt") == "":
        return True
    expect(page.locator("#notice")).to_be_visible()
    page.fill("#prompt", "")
    return False


def turns_stored(page) -> int:
    return int(page.evaluate(
        "Object.keys(localStorage).filter((k) => /^rill\\.turn\\./.test(k)).length"))


def edited(tab, rng: random.Random, name: str) -> bool:
    """Edit a question on screen into name and send it; True if the page took it (False:
    none to edit, or refused with its notice, and the editor cancelled)."""
    edits = tab.locator("#transcript .turn-user .edit-message")
    assert edits.count() == tab.locator("#transcript .turn-user").count(), "each has Edit"
    if not edits.count():
        return False
    before = turns_stored(tab)
    edits.nth(rng.randrange(edits.count())).dispatch_event("click")
    tab.locator(".edit-input").fill(name)
    click(tab, ".edit-save")
    if tab.locator(".edit-form").count():
        expect(tab.locator("#notice")).to_be_visible()
        click(tab, ".edit-cancel")
        return False
    assert turns_stored(tab) == before + 2, "a question and its answer"
    return True


def regenerated(tab) -> bool:
    """Regenerate the last answer on screen (a new version: one more turn); True if the page
    took it (False: no answer to regenerate, or refused with its notice)."""
    button = tab.locator("#regenerate")
    if not button.count() or not button.is_enabled():
        return False
    before = turns_stored(tab)
    click(tab, "#regenerate")
    if turns_stored(tab) == before + 1:
        return True
    expect(tab.locator("#notice")).to_be_visible()
    return False


def step(rng: random.Random, tabs: list, ids: list[str], name: str, asked: list[str],
         done: list[str]) -> None:
    tab = rng.choice(tabs)
    action = rng.choices(["send", "stop", "reload", "switch", "edit", "regenerate", "version"],
                         weights=[4, 2, 1, 2, 2, 2, 2])[0]
    conversation = rng.choice(ids)
    if action == "reload":
        tab.reload()
        done.append(action)
        return
    click(tab, f'#conversation-list li[data-id="{conversation}"] .conversation-open')
    taken = False
    if action == "send":
        taken = sent(tab, name)
    elif action == "stop" and tab.locator("#stop").is_enabled():
        click(tab, "#stop")
        taken = True
    elif action == "edit":
        taken = edited(tab, rng, name)
    elif action == "regenerate":
        taken = regenerated(tab)
    elif action == "version":
        buttons = tab.locator("#transcript .versions button:not([disabled])")
        if buttons.count():
            buttons.nth(rng.randrange(buttons.count())).dispatch_event("click")
            taken = not tab.locator("#notice").is_visible()
    if taken and action in ("send", "edit"):
        asked.append(name)
    done.append(f"{action} taken" if taken else action)


def check_storage(turns: list[dict], asked: list[str], regenerates: int) -> None:
    """A conversation's stored turns (every branch): questions and answers alternate down
    every branch, each question has an answer (more, one a regenerate taken), each question
    sent is kept once, and each answer is the simulator's."""
    by_id = {t["id"]: t for t in turns}
    for turn in turns:
        parent = by_id.get(turn["parent"]) if turn["parent"] else None
        assert (parent or {"role": "assistant"})["role"] != turn["role"], turn
        assert parent or turn["parent"] is None, f"{turn} hangs from a turn not stored"
    questions = [t for t in turns if t["role"] == "user"]
    answers = [t for t in turns if t["role"] == "assistant"]
    assert sorted(t["content"] for t in questions) == sorted(asked), "each question, once"
    answered = {t["parent"] for t in answers}
    assert all(q["id"] in answered for q in questions), "each question has its answer"
    assert len(answers) == len(questions) + regenerates, "no answer lost or repeated"
    for reply in answers:
        if reply.get("status") == "stopped":
            assert FULL.startswith(reply["content"]), reply
        elif reply.get("status") == "failed":  # reloaded before the stream had an id
            assert reply["content"] == "", reply
        else:
            assert (reply["content"], reply.get("status")) == (FULL, None), reply


def view(turns: list[dict]) -> list[list]:
    """What a transcript shows of a stored branch."""
    return [[t["role"], t["content"].strip(), t["status"],
             "{}/{}".format(*t["version"]) if t["version"][1] > 1 else ""] for t in turns]


# Each conversation the tab lists, opened from its list in turn (one round trip): {id: [turn
# as shown]}.
EVERY_CONVERSATION = """() => {
    const seen = {};
    for (const li of [...document.querySelectorAll('#conversation-list li')]) {
        const id = li.dataset.id;
        const open = [...document.querySelectorAll('#conversation-list li')]
            .find((item) => item.dataset.id === id).querySelector('.conversation-open');
        open.click();
        seen[id] = [...document.querySelectorAll('#transcript > .turn')].map((item) => [
            item.dataset.role, item.querySelector('.turn-text').innerText.trim(),
            ['stopped', 'failed'].find((s) => item.classList.contains(s)) || null,
            item.querySelector('.version-label')?.innerText || '',
            item.getAttribute('aria-busy') === 'true']);
    }
    return seen;
}"""


def disagreement(tab, conversations: dict[str, list[dict]]) -> str:
    """How the tab differs from storage: its list of conversations, or how it shows one
    ("" for none)."""
    seen = tab.evaluate(EVERY_CONVERSATION)
    if sorted(seen) != sorted(conversations):
        return f"lists {list(seen)}, stored {list(conversations)}"
    for conversation, turns in conversations.items():
        expected = [[*turn, False] for turn in view(turns)]
        if seen[conversation] != expected:
            return f"shows {seen[conversation]}, stored {expected}"
    return ""


@pytest.mark.parametrize("seed", SEEDS)
def test_two_tabs_three_conversations_in_a_random_order(random_rill, browser, seed) -> None:
    rng = random.Random(seed)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        tabs = [context.new_page(), context.new_page()]
        for tab in tabs:
            tab.goto(random_rill.url)
        ids: list[str] = []
        asked: list[str] = []
        done: list[str] = []
        for index in range(3):
            click(tabs[0], "#new-chat")
            name = f"seed {seed} conversation {index}"
            assert sent(tabs[0], name)
            asked.append(name)
            expect(tabs[0].locator("#conversation-list li")).to_have_count(index + 1)
            ids.append(current_conversation(tabs[0]))
        began = time.monotonic()
        for number in range(STEPS):
            step(rng, tabs, ids, f"seed {seed} step {number}", asked, done)
            tabs[0].wait_for_timeout(rng.randint(50, 250))
        deadline = time.monotonic() + 20
        while any(t.get("status") == "streaming" for c in tree(tabs[0])[0].values() for t in c):
            assert time.monotonic() < deadline, "every answer ends"
            time.sleep(0.1)
        turns, _ = tree(tabs[0])
        assert sorted(turns) == sorted(ids)
        check_storage([t for found in turns.values() for t in found], asked,
                      done.count("regenerate taken"))
        conversations = stored(tabs[0])
        deadline = time.monotonic() + 5
        for tab in tabs:
            while difference := disagreement(tab, conversations):
                assert time.monotonic() < deadline, difference
                time.sleep(0.2)
        assert stored(tabs[1]) == conversations
        print(f"seed {seed}: {STEPS} steps and checks in {time.monotonic() - began:.1f} s;",
              {a: done.count(a) for a in sorted(set(done))})
    finally:
        context.close()
