"""The chat page with several tabs and several conversations at once (issue 15, items 1 and
2): Chromium pages sharing one browser context (so one localStorage), against gunicorn and
the simulator."""

from __future__ import annotations

import re
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
from tests.integration.conftest import RillServer, page_env, run_rill

pytestmark = pytest.mark.integration

TOKENS = 80
FULL = expected_text(TOKENS)
MODEL = f"sim?tokens={TOKENS}&itl_ms=50&ttft_ms=100"
LONG_TOKENS = 160  # long enough for three to overlap on a slow machine
LONG = f"sim?tokens={LONG_TOKENS}&itl_ms=50"
DONE = re.compile("^Done")


@pytest.fixture(scope="module")
def tabs_rill(simulator) -> Iterator[RillServer]:
    env = page_env(simulator, RILL_MODEL=MODEL, RILL_MODELS=f"{MODEL},{LONG}")
    with run_rill(env, "page-tabs") as server:
        yield server



def answer(page):
    return page.locator("#transcript .turn-assistant .turn-text").last


def two_tabs(context, url: str, question: str, seen: str) -> tuple:
    """A first tab that asks ``question`` and shows its answer up to token ``seen``, then a
    second tab opened on the page."""
    first = context.new_page()
    first.goto(url)
    send(first, question)
    expect(answer(first)).to_have_text(re.compile(rf"{seen}\b"))
    second = context.new_page()
    second.goto(url)
    return first, second


def wait_settled(page, timeout: float = 20) -> None:
    """Until no answer is stored as in flight."""
    deadline = time.monotonic() + timeout
    while any(t["status"] == "streaming" for turns in stored(page).values() for t in turns):
        assert time.monotonic() < deadline, stored(page)
        time.sleep(0.1)


def test_a_second_tab_opened_mid_stream_shows_the_live_answer(tabs_rill, context) -> None:
    first, second = two_tabs(context, tabs_rill.url, "Stream for two tabs", "tok5")
    opened = time.monotonic()
    expect(answer(second)).to_have_text(re.compile(r"tok\d+"), timeout=1_000)
    assert time.monotonic() - opened < 1.5
    early = answer(second).inner_text()
    assert not FULL.strip().startswith(early) or early != FULL.strip(), "live, mid-stream"
    expect(second.locator("#status")).to_have_text(re.compile("^Generating"))
    expect(second.locator("#stop")).to_be_enabled()
    expect(answer(second)).to_have_text(FULL.strip(), timeout=15_000)
    expect(second.locator("#transcript .turn-assistant")).not_to_have_attribute("aria-busy",
                                                                                "true")
    expect(first.locator("#status")).to_have_text(DONE, timeout=15_000)
    assert answer(first).inner_text() == FULL.strip()
    wait_settled(first)
    conversation = current_conversation(first)
    assert [(t["role"], t["content"]) for t in stored(first)[conversation]] == [
        ("user", "Stream for two tabs"), ("assistant", FULL)]
    assert shown(first) == shown(second)


@pytest.fixture(scope="module")
def one_model_rill(simulator) -> Iterator[RillServer]:
    """No model picker: the page learns the model from the stream's start event."""
    with run_rill(page_env(simulator, RILL_MODEL=MODEL), "page-tabs-one-model") as server:
        yield server


def test_a_tab_following_another_tabs_answer_shows_its_model(one_model_rill, context) -> None:
    first, second = two_tabs(context, one_model_rill.url, "Which model?", "tok2")
    assert first.locator("#model").count() == 0
    badge = first.locator("#transcript .turn-assistant .turn-model")
    expect(badge).to_have_text(re.compile(r"\S"))
    expect(answer(second)).to_have_text(re.compile(r"tok\d+"))
    expect(second.locator("#transcript .turn-assistant .turn-model")).to_have_text(
        badge.inner_text())


def test_three_conversations_stream_at_once_and_stop_stops_only_its_own(
        tabs_rill, context, simulator) -> None:
    page = context.new_page()
    page.goto(tabs_rill.url)
    page.select_option("#model", LONG)
    full = expected_text(LONG_TOKENS)
    ids = []
    for name in ("one", "two", "three"):
        if ids:
            page.click("#new-chat")
            # An empty chat is not busy with the others' answers: nothing to stop there.
            expect(page.locator("#status")).to_have_text("")
            expect(page.locator("#stop")).to_be_disabled()
        send(page, f"Question {name}")
        expect(answer(page)).to_have_text(re.compile(r"tok1\b"))
        ids.append(current_conversation(page))
    assert len(set(ids)) == 3
    live = page.locator("#conversation-list .conversation.live")
    expect(live).to_have_count(3)
    for item in live.all():
        expect(item.locator(".conversation-open")).to_have_accessible_name(
            re.compile("Generating"))
    open_conversation(page, ids[1])
    expect(page.locator("#stop")).to_be_enabled()
    page.click("#stop")
    expect(page.locator("#status")).to_have_text("Stopped.")
    expect(live).to_have_count(2)
    open_conversation(page, ids[2])
    expect(page.locator("#status")).to_have_text(re.compile("^Generating"))
    expect(page.locator("#status")).to_have_text(DONE, timeout=20_000)
    wait_settled(page)
    conversations = stored(page)
    for index, id_ in enumerate(ids):
        question, reply = conversations[id_]
        assert question["content"] == f"Question {('one', 'two', 'three')[index]}"
        if index == 1:
            assert reply["status"] == "stopped"
            assert 0 < len(reply["content"]) < len(full) and full.startswith(reply["content"])
        else:
            assert (reply["content"], reply["status"]) == (full, None)
    expect(live).to_have_count(0)
    outcomes = {r["body"]["messages"][-1]["content"]: r["outcome"] for r in simulator.requests()}
    assert outcomes["Question two"] == "client_closed", "the stop cancelled it upstream"
    assert outcomes["Question one"] != "client_closed" != outcomes["Question three"]


def test_a_follow_up_from_another_tab_waits_and_loses_no_turn(tabs_rill, context) -> None:
    first, second = two_tabs(context, tabs_rill.url, "First question", "tok2")
    conversation = current_conversation(first)
    open_conversation(second, conversation)
    send(second, "Second question")
    notice = second.locator("#notice")
    expect(notice).to_be_visible()
    expect(notice).to_have_text(re.compile("still being written"))
    expect(first.locator("#status")).to_have_text(DONE, timeout=20_000)
    expect(second.locator("#send")).to_be_enabled()
    assert second.input_value("#prompt") == "Second question", "the refused text is kept"
    second.keyboard.press("Enter")
    expect(notice).to_be_hidden()
    expect(second.locator("#status")).to_have_text(DONE, timeout=20_000)
    wait_settled(second)
    turns = stored(second)[conversation]
    assert [(t["role"], t["content"], t["status"]) for t in turns] == [
        ("user", "First question", None), ("assistant", FULL, None),
        ("user", "Second question", None), ("assistant", FULL, None)]
    expect(first.locator("#transcript .turn")).to_have_count(4)
    expect(answer(first)).to_have_text(FULL.strip())
    assert shown(first) == shown(second)
    assert [(t["role"], t["text"]) for t in shown(first)] == [
        ("user", "First question"), ("assistant", FULL.strip()),
        ("user", "Second question"), ("assistant", FULL.strip())]


@pytest.fixture(scope="module")
def capped_rill(simulator) -> Iterator[RillServer]:
    # Answers long enough to be still running when another browser asks, on a slow machine.
    env = page_env(simulator, RILL_MODEL=f"sim?tokens={LONG_TOKENS}&itl_ms=60",
                    RILL_MAX_STREAMS_PER_CLIENT="2")
    with run_rill(env, "page-tabs-capped") as server:
        yield server


def test_the_page_keeps_to_the_stream_cap_and_says_so(capped_rill, browser, context) -> None:
    page = context.new_page()
    page.goto(capped_rill.url)
    assert page.locator("#chat").get_attribute("data-max-streams") == "2"
    for name in ("one", "two"):
        page.click("#new-chat")
        send(page, f"Capped {name}")
        expect(answer(page)).to_have_text(re.compile(r"tok1\b"))
    page.click("#new-chat")
    send(page, "Capped three")
    notice = page.locator("#notice")
    expect(notice).to_have_text(re.compile(r"2 answers are being written already"))
    assert page.input_value("#prompt") == "Capped three"
    expect(page.locator("#transcript .turn")).to_have_count(0)
    # Another browser of the same client knows nothing of these two: the server's 429 is
    # said just as clearly there, and its question goes back into the composer.
    other = browser.new_context()
    try:
        elsewhere = other.new_page()
        elsewhere.goto(capped_rill.url)
        send(elsewhere, "Capped four")
        status = elsewhere.locator("#status")
        expect(status).to_have_class(re.compile("status-error"))
        expect(status).to_have_text(re.compile("already have 2 answers streaming"))
        assert elsewhere.input_value("#prompt") == "Capped four"
    finally:
        other.close()
    wait_settled(page, timeout=30)


OLD_FORMAT = [  # rill.conversations as the page stored it before turns had keys of their own
    {"id": "c-new", "title": "Renamed by hand", "updated": 2_000, "messages": [
        {"role": "user", "content": "Newer question"},
        {"role": "assistant", "content": "Newer **answer**", "model": "sim"},
        {"role": "user", "content": "Follow-up"},
        {"role": "assistant", "content": "Cut", "status": "failed", "note": "It broke."}]},
    {"id": "c-old", "title": "Older question", "updated": 1_000, "messages": [
        {"role": "user", "content": "Older question"},
        {"role": "assistant", "content": "Stopped here", "status": "stopped"}]},
]


def test_conversations_in_the_format_before_are_converted_once(tabs_rill, context) -> None:
    page = context.new_page()
    page.goto(tabs_rill.url)
    page.evaluate("""(old) => {
        for (const key of Object.keys(localStorage)) localStorage.removeItem(key);
        localStorage.setItem('rill.conversations', JSON.stringify(old));
    }""", OLD_FORMAT)
    page.reload()
    expect(page.locator("#conversation-list li")).to_have_count(2)
    open_conversation(page, "c-new")
    assert page.locator("#conversation-list .conversation-title").all_inner_texts() == [
        "Renamed by hand", "Older question"]
    assert [(t["role"], t["text"], t["status"]) for t in shown(page)] == [
        ("user", "Newer question", None), ("assistant", "Newer answer", None),
        ("user", "Follow-up", None), ("assistant", "Cut", "failed")]
    assert page.evaluate("localStorage.getItem('rill.conversations')") is None
    conversations = stored(page)
    assert [(t["role"], t["content"], t["status"]) for t in conversations["c-old"]] == [
        ("user", "Older question", None), ("assistant", "Stopped here", "stopped")]
    assert len(conversations["c-new"]) == 4
    page.reload()  # converted once: nothing is added the second time
    expect(page.locator("#transcript .turn")).to_have_count(4)
    assert stored(page) == conversations


def test_regenerate_shows_the_new_answer_in_every_tab(tabs_rill, context) -> None:
    first = context.new_page()
    first.goto(tabs_rill.url)
    send(first, "Answer twice")
    expect(first.locator("#status")).to_have_text(DONE, timeout=20_000)
    second = context.new_page()
    second.goto(tabs_rill.url)
    conversation = current_conversation(first)
    open_conversation(second, conversation)
    first.click("#regenerate")
    expect(answer(second)).not_to_have_text(FULL.strip())  # the new answer, live there too
    expect(first.locator("#status")).to_have_text(DONE, timeout=20_000)
    wait_settled(first)
    assert [(t["role"], t["content"]) for t in stored(first)[conversation]] == [
        ("user", "Answer twice"), ("assistant", FULL)]
    expect(second.locator("#transcript .turn")).to_have_count(2)
    expect(answer(second)).to_have_text(FULL.strip())
    assert shown(first) == shown(second)
