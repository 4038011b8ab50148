"""Two tabs and three conversations, driven at random (issue 15's acceptance): sends, stops,
reloads and switches in an order a seed decides. After each run every tab shows what
storage holds, no turn is lost or duplicated, and each answer is the simulator's text (a
stopped one a prefix of it)."""

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
)
from tests.integration.conftest import RillServer, page_env, run_rill

pytestmark = pytest.mark.integration

TOKENS = 20
FULL = expected_text(TOKENS)
SEEDS = range(5)
STEPS = 24
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


def step(rng: random.Random, tabs: list, ids: list[str], name: str, asked: list[str],
         done: list[str]) -> None:
    tab = rng.choice(tabs)
    action = rng.choices(["send", "stop", "reload", "switch"], weights=[4, 2, 1, 3])[0]
    conversation = rng.choice(ids)
    if action == "reload":
        tab.reload()
        done.append(action)
        return
    click(tab, f'#conversation-list li[data-id="{conversation}"] .conversation-open')
    if action == "send" and sent(tab, name):
        asked.append(name)
    elif action == "stop" and tab.locator("#stop").is_enabled():
        click(tab, "#stop")
        action = "stopped"
    done.append(action)


def check_storage(conversations: dict[str, list[dict]], asked: list[str]) -> None:
    questions = [t["content"] for turns in conversations.values() for t in turns
                 if t["role"] == "user"]
    assert sorted(questions) == sorted(asked), "every question sent is kept, once"
    for turns in conversations.values():
        assert [t["role"] for t in turns] == ["user", "assistant"] * (len(turns) // 2)
        assert len(turns) % 2 == 0, "each question has its answer"
        for reply in (t for t in turns if t["role"] == "assistant"):
            if reply["status"] == "stopped":
                assert FULL.startswith(reply["content"]), reply
            elif reply["status"] == "failed":  # reloaded before the stream had an id
                assert reply["content"] == "", reply
            else:
                assert (reply["content"], reply["status"]) == (FULL, None), reply


def view(turns: list[dict]) -> list[tuple]:
    """What a transcript shows of stored turns."""
    return [[t["role"], t["content"].strip(), t["status"]] for t in turns]


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
            tabs[0].wait_for_timeout(rng.randint(50, 400))
        deadline = time.monotonic() + 20
        while any(t["status"] == "streaming" for c in stored(tabs[0]).values() for t in c):
            assert time.monotonic() < deadline, "every answer ends"
            time.sleep(0.1)
        conversations = stored(tabs[0])
        assert sorted(conversations) == sorted(ids)
        check_storage(conversations, asked)
        deadline = time.monotonic() + 5
        for tab in tabs:
            while difference := disagreement(tab, conversations):
                assert time.monotonic() < deadline, difference
                time.sleep(0.2)
        assert stored(tabs[1]) == conversations
        print(f"seed {seed}: {STEPS} steps and checks in {time.monotonic() - began:.1f} s;",
              f"{len(asked) - 3} sends taken,", {a: done.count(a) for a in set(done)})
    finally:
        context.close()
