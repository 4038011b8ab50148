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
    open_conversation,
    send,
    shown,
    stored,
)
from tests.integration.conftest import RillServer, relay_env, run_rill

pytestmark = pytest.mark.integration

TOKENS = 20
FULL = expected_text(TOKENS)
SEEDS = range(5)
STEPS = 14
NEVER_STARTED = "Connection lost before the answer started. Please send again."


@pytest.fixture(scope="module")
def random_rill(simulator) -> Iterator[RillServer]:
    env = relay_env(simulator, RILL_MODEL=f"sim?tokens={TOKENS}&itl_ms=40&ttft_ms=50",
                    RILL_ORPHAN_GRACE_SECONDS="30")
    with run_rill(env, "page-tabs-random") as server:
        yield server


def sent(page, text: str) -> bool:
    """Send text from page; True if the page took it (False: refused, with its notice)."""
    send(page, text)
    if page.input_value("#prompt") == "":
        return True
    expect(page.locator("#notice")).to_be_visible()
    page.fill("#prompt", "")
    return False


def step(rng: random.Random, tabs: list, ids: list[str], name: str, asked: list[str]) -> None:
    tab = rng.choice(tabs)
    action = rng.choices(["send", "stop", "reload", "switch"], weights=[4, 2, 1, 3])[0]
    conversation = rng.choice(ids)
    if action == "reload":
        tab.reload()
        return
    open_conversation(tab, conversation)
    if action == "send" and sent(tab, name):
        asked.append(name)
    elif action == "stop" and tab.locator("#stop").is_enabled():
        tab.click("#stop")


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
    return [(t["role"], t["content"].strip(), t["status"]) for t in turns]


def disagreement(tab, conversations: dict[str, list[dict]]) -> str:
    """How the tab differs from storage: its list of conversations, or how it shows one
    ("" for none)."""
    listed = tab.locator("#conversation-list li").evaluate_all(
        "items => items.map((li) => li.dataset.id)")
    if sorted(listed) != sorted(conversations):
        return f"lists {listed}, stored {list(conversations)}"
    for conversation, turns in conversations.items():
        open_conversation(tab, conversation)
        on_screen = [(t["role"], t["text"].strip(), t["status"]) for t in shown(tab)]
        if on_screen != view(turns) or any(t["busy"] for t in shown(tab)):
            return f"shows {shown(tab)}, stored {view(turns)}"
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
        for index in range(3):
            tabs[0].click("#new-chat")
            name = f"seed {seed} conversation {index}"
            assert sent(tabs[0], name)
            asked.append(name)
            expect(tabs[0].locator("#conversation-list li")).to_have_count(index + 1)
            ids.append(current_conversation(tabs[0]))
        for number in range(STEPS):
            step(rng, tabs, ids, f"seed {seed} step {number}", asked)
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
    finally:
        context.close()
