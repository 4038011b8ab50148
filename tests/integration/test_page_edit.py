"""Edit and versions on the chat page (issue 15, item 3): an edited question is a new branch,
Regenerate keeps the answers before, browsable as versions (n/m), and what goes upstream is the
branch shown; in Chromium against gunicorn and the simulator, which records what it got."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest

from rill.simulator import expected_text
from tests.integration.browser import (
    current_conversation,
    expect,
    open_conversation,
    send,
    stored,
    tree,
)
from tests.integration.conftest import RillServer, page_env, run_rill

pytestmark = pytest.mark.integration

SHORT, OTHER = 12, 7  # two models whose answers differ: tok0 … tok11, tok0 … tok6
MODEL = f"sim?tokens={SHORT}&itl_ms=30&ttft_ms=50"
OTHER_MODEL = f"sim?tokens={OTHER}&itl_ms=30&ttft_ms=50"
SLOW_TOKENS = 160
SLOW = f"sim?tokens={SLOW_TOKENS}&itl_ms=50"
ENDLESS = "sim?tokens=5000&itl_ms=50"  # written until stopped
DONE = re.compile("^Done")


@pytest.fixture(scope="module")
def edit_rill(simulator) -> Iterator[RillServer]:
    env = page_env(simulator, RILL_MODEL=MODEL,
                   RILL_MODELS=f"{MODEL},{OTHER_MODEL},{SLOW},{ENDLESS}")
    with run_rill(env, "page-edit") as server:
        yield server



def text(tokens: int) -> str:
    return expected_text(tokens).strip()


def on_screen(page) -> list[tuple[str, str, str]]:
    """The transcript: [(role, text, "n/m" or "")]."""
    return [tuple(turn) for turn in page.evaluate("""() => [...document.querySelectorAll(
        '#transcript > .turn')].map((li) => [li.dataset.role,
        li.querySelector('.turn-text').innerText.trim(),
        li.querySelector('.version-label')?.innerText || ''])""")]


def upstream(simulator, question: str) -> list[tuple[str, str]]:
    """The messages upstream got with the request that ended with question (the only one)."""
    found = [r["body"]["messages"] for r in simulator.requests()
             if r["body"]["messages"][-1]["content"] == question]
    assert len(found) == 1, found
    return [(m["role"], m["content"]) for m in found[0]]


def asked(page, question: str) -> None:
    send(page, question)
    expect(page.locator("#status")).to_have_text(DONE, timeout=15_000)


def turn(page, index: int):
    return page.locator("#transcript > .turn").nth(index)


def test_an_edit_is_a_new_branch_and_upstream_gets_the_branch_shown(edit_rill, page,
                                                                     simulator) -> None:
    tag = uuid.uuid4().hex[:8]
    first, second, edited = f"{tag} first", f"{tag} second", f"{tag} first, edited"
    page.goto(edit_rill.url)
    asked(page, first)
    asked(page, second)
    question = turn(page, 0)
    question.get_by_role("button", name="Edit message").click()
    box = question.get_by_role("textbox", name="Edit message")
    expect(box).to_be_focused()
    expect(box).to_have_value(first)
    page.keyboard.press("Escape")  # cancels: nothing changes, the focus goes back to Edit
    expect(box).to_have_count(0)
    expect(question.get_by_role("button", name="Edit message")).to_be_focused()
    assert on_screen(page) == [("user", first, ""), ("assistant", text(SHORT), ""),
                               ("user", second, ""), ("assistant", text(SHORT), "")]
    question.get_by_role("button", name="Edit message").click()
    turn(page, 2).get_by_role("button", name="Edit message").click()  # one editor at a time
    expect(page.get_by_role("textbox", name="Edit message")).to_have_value(second)
    page.keyboard.press("Escape")
    question.get_by_role("button", name="Edit message").click()
    box.fill(edited)
    question.get_by_role("button", name="Save & send").click()
    expect(page.locator("#prompt")).to_be_focused()
    expect(page.locator("#status")).to_have_text(DONE, timeout=15_000)
    assert on_screen(page) == [("user", edited, "2/2"), ("assistant", text(SHORT), "")]
    assert upstream(simulator, edited) == [("user", edited)]
    # The old branch stays, a click away; the focus stays on the version buttons.
    question.get_by_role("button", name="Previous version").click()
    assert on_screen(page) == [("user", first, "1/2"), ("assistant", text(SHORT), ""),
                               ("user", second, ""), ("assistant", text(SHORT), "")]
    expect(question.get_by_role("button", name="Previous version")).to_be_disabled()
    expect(question.get_by_role("button", name="Next version")).to_be_focused()
    # What the next send carries is the branch on screen.
    asked(page, f"{tag} third, on the first branch")
    assert upstream(simulator, f"{tag} third, on the first branch") == [
        ("user", first), ("assistant", expected_text(SHORT)), ("user", second),
        ("assistant", expected_text(SHORT)), ("user", f"{tag} third, on the first branch")]
    question.get_by_role("button", name="Next version").click()
    assert on_screen(page) == [("user", edited, "2/2"), ("assistant", text(SHORT), "")]
    asked(page, f"{tag} fourth, on the edited branch")
    assert upstream(simulator, f"{tag} fourth, on the edited branch") == [
        ("user", edited), ("assistant", expected_text(SHORT)),
        ("user", f"{tag} fourth, on the edited branch")]
    page.reload()  # the version on screen is stored, not this tab's alone
    assert on_screen(page)[0] == ("user", edited, "2/2")
    turns, _ = tree(page)
    assert sorted(t["content"] for t in turns[current_conversation(page)]
                  if t["role"] == "user") == sorted(
        [first, second, edited, f"{tag} third, on the first branch",
         f"{tag} fourth, on the edited branch"]), "every turn kept, once"


def test_regenerate_keeps_both_answers_and_a_second_tab_follows(edit_rill, context,
                                                                 simulator) -> None:
    question = f"{uuid.uuid4().hex[:8]} answer twice"
    first = context.new_page()
    first.goto(edit_rill.url)
    asked(first, question)
    conversation = current_conversation(first)
    second = context.new_page()
    second.goto(edit_rill.url)
    open_conversation(second, conversation)
    first.select_option("#model", OTHER_MODEL)
    first.click("#regenerate")
    expect(first.locator("#status")).to_have_text(DONE, timeout=15_000)
    assert on_screen(first) == [("user", question, ""), ("assistant", text(OTHER), "2/2")]
    answer = turn(first, 1)
    expect(answer.locator(".turn-model")).to_have_text(OTHER_MODEL)
    requests = [r["body"] for r in simulator.requests()
                if r["body"]["messages"][-1]["content"] == question]
    assert [(r["model"], r["messages"]) for r in requests] == [
        (MODEL, [{"role": "user", "content": question}]),
        (OTHER_MODEL, [{"role": "user", "content": question}])], "the question alone, twice"
    expect(turn(second, 1).locator(".version-label")).to_have_text("2/2")
    assert on_screen(second) == on_screen(first)
    answer.get_by_role("button", name="Previous version").click()
    assert on_screen(first) == [("user", question, ""), ("assistant", text(SHORT), "1/2")]
    expect(answer.locator(".version-label")).to_have_text("1/2")
    expect(answer.get_by_role("button", name="Next version")).to_be_focused()
    expect(turn(second, 1).locator(".version-label")).to_have_text("1/2")  # picks sync
    assert on_screen(second) == on_screen(first)
    answer.get_by_role("button", name="Next version").click()
    expect(turn(second, 1).locator(".turn-text")).to_have_text(text(OTHER))
    assert [(t["role"], t["content"], t["version"]) for t in stored(first)[conversation]] == [
        ("user", question, (1, 1)), ("assistant", expected_text(OTHER), (2, 2))]
    # A follow-up from the second tab goes with the answer on screen.
    second.select_option("#model", MODEL)
    asked(second, f"{question}, then")
    assert upstream(simulator, f"{question}, then") == [
        ("user", question), ("assistant", expected_text(OTHER)), ("user", f"{question}, then")]
    expect(first.locator("#transcript > .turn")).to_have_count(4)
    assert on_screen(first) == on_screen(second)


def test_edits_regenerates_and_version_switches_wait_for_an_answer_in_another_tab(
        edit_rill, context) -> None:
    tag = uuid.uuid4().hex[:8]
    first = context.new_page()
    first.goto(edit_rill.url)
    asked(first, f"{tag} one")
    turn(first, 0).get_by_role("button", name="Edit message").click()
    turn(first, 0).get_by_role("textbox", name="Edit message").fill(f"{tag} one, edited")
    first.keyboard.press("Enter")
    expect(first.locator("#status")).to_have_text(DONE, timeout=15_000)
    first.select_option("#model", ENDLESS)
    send(first, f"{tag} two")
    expect(turn(first, 3).locator(".turn-text")).to_have_text(re.compile(r"tok2\b"))
    second = context.new_page()
    second.goto(edit_rill.url)
    open_conversation(second, current_conversation(first))
    expect(turn(second, 3).locator(".turn-text")).to_have_text(re.compile(r"tok\d+"))
    notice = second.locator("#notice")
    question = turn(second, 2)
    question.get_by_role("button", name="Edit message").click()
    question.get_by_role("textbox", name="Edit message").fill(f"{tag} two, edited")
    question.get_by_role("button", name="Save & send").click()
    expect(notice).to_have_text(re.compile("still being written"))
    expect(question.get_by_role("textbox", name="Edit message")).to_have_value(
        f"{tag} two, edited")  # kept, to send once the answer is done
    turn(second, 0).get_by_role("button", name="Previous version").click()
    expect(notice).to_have_text(re.compile("still being written.*another version"))
    assert on_screen(second)[0] == ("user", f"{tag} one, edited", "2/2")
    expect(turn(second, 3)).to_have_attribute("aria-busy", "true")
    second.click("#stop")
    expect(second.locator("#status")).to_have_text("Stopped.")
    question.get_by_role("button", name="Save & send").click()
    expect(notice).to_be_hidden()
    expect(second.locator("#status")).to_have_text(DONE, timeout=20_000)
    assert on_screen(second)[2:] == [("user", f"{tag} two, edited", "2/2"),
                                     ("assistant", text(SHORT), "")]  # this tab's model
    expect(turn(first, 2).locator(".turn-text")).to_have_text(f"{tag} two, edited")
    assert on_screen(first) == on_screen(second)
    # Regenerate in the instant another tab's answer began, before this tab shows it.
    second.evaluate("""() => addEventListener('storage', function started(event) {
        if (!/"status":"streaming"/.test(event.newValue || '')) return;
        removeEventListener('storage', started);
        document.getElementById('regenerate').click();
        window.regenerated = document.getElementById('notice').textContent;
    })""")
    send(first, f"{tag} three")
    second.wait_for_function("window.regenerated !== undefined")
    assert "still being written" in second.evaluate("window.regenerated")
    first.click("#stop")
    expect(second.locator("#transcript > .turn")).to_have_count(6)
    expect(turn(second, 5)).to_have_class(re.compile("stopped"))
    assert on_screen(second)[3:5] == [("assistant", text(SHORT), ""), ("user", f"{tag} three", "")
                                      ], "no new version"


def test_an_answer_on_an_edited_branch_resumes_after_a_reload(edit_rill, page) -> None:
    tag = uuid.uuid4().hex[:8]
    page.goto(edit_rill.url)
    asked(page, f"{tag} before")
    page.select_option("#model", SLOW)
    turn(page, 0).get_by_role("button", name="Edit message").click()
    turn(page, 0).get_by_role("textbox", name="Edit message").fill(f"{tag} after")
    page.keyboard.press("Enter")
    expect(turn(page, 1).locator(".turn-text")).to_have_text(re.compile(r"tok5\b"))
    page.reload()
    expect(turn(page, 1).locator(".turn-text")).to_have_text(text(SLOW_TOKENS), timeout=20_000)
    expect(page.locator("#status")).to_have_text(DONE, timeout=5_000)
    assert on_screen(page) == [("user", f"{tag} after", "2/2"),
                               ("assistant", text(SLOW_TOKENS), "")]
    conversation = current_conversation(page)
    assert [(t["content"], t["status"]) for t in stored(page)[conversation]] == [
        (f"{tag} after", None), (expected_text(SLOW_TOKENS), None)]


# Turns as the page stored them before versions: one line, ordered by (at, pair, n).
LINE = [
    {"id": "q1", "role": "user", "content": "Line question", "at": 1000, "pair": "p1", "n": 0},
    {"id": "a1", "role": "assistant", "content": "Line **answer**", "at": 1000, "pair": "p1",
     "n": 1, "model": "sim"},
    {"id": "q2", "role": "user", "content": "Line follow-up", "at": 2000, "pair": "p0",
     "n": 0},
    {"id": "a2", "role": "assistant", "content": "Cut", "at": 2000, "pair": "p0", "n": 1,
     "status": "stopped"},
]


def test_conversations_stored_before_versions_load_unchanged_and_branch(edit_rill, page,
                                                                        simulator) -> None:
    page.goto(edit_rill.url)
    page.evaluate("""(line) => {
        localStorage.clear();
        for (const turn of line) {
            localStorage.setItem(`rill.turn.c-line.${turn.id}`, JSON.stringify(
                {...turn, conversation: 'c-line', v: 1, updated: turn.at}));
        }
    }""", LINE)
    page.reload()
    open_conversation(page, "c-line")
    assert on_screen(page) == [("user", "Line question", ""), ("assistant", "Line answer", ""),
                               ("user", "Line follow-up", ""), ("assistant", "Cut", "")]
    page.click("#regenerate")
    expect(page.locator("#status")).to_have_text(DONE, timeout=15_000)
    assert upstream(simulator, "Line follow-up")[:2] == [
        ("user", "Line question"), ("assistant", "Line **answer**")]
    assert on_screen(page)[3] == ("assistant", text(SHORT), "2/2")
    turn(page, 2).get_by_role("button", name="Edit message").click()
    turn(page, 2).get_by_role("textbox", name="Edit message").fill("Line follow-up, edited")
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text(DONE, timeout=15_000)
    assert upstream(simulator, "Line follow-up, edited") == [
        ("user", "Line question"), ("assistant", "Line **answer**"),
        ("user", "Line follow-up, edited")]
    turn(page, 2).get_by_role("button", name="Previous version").click()
    assert on_screen(page) == [("user", "Line question", ""), ("assistant", "Line answer", ""),
                               ("user", "Line follow-up", "1/2"),
                               ("assistant", text(SHORT), "2/2")]
    turn(page, 3).get_by_role("button", name="Previous version").click()
    assert on_screen(page)[3] == ("assistant", "Cut", "1/2")
    expect(turn(page, 3)).to_have_class(re.compile("stopped"))


@pytest.fixture(scope="module")
def one_stream_rill(simulator) -> Iterator[RillServer]:
    env = page_env(simulator, RILL_MODEL=MODEL, RILL_MODELS=f"{MODEL},{ENDLESS}",
                   RILL_MAX_STREAMS_PER_CLIENT="1")
    with run_rill(env, "page-edit-one-stream") as server:
        yield server


def test_a_new_version_the_server_refuses_gives_the_screen_back(one_stream_rill, browser,
                                                                 page) -> None:
    page.goto(one_stream_rill.url)
    asked(page, "Refused versions")
    before = on_screen(page)
    # Another browser of the same client holds the one stream the server allows it.
    other = browser.new_context()
    try:
        elsewhere = other.new_page()
        elsewhere.goto(one_stream_rill.url)
        elsewhere.select_option("#model", ENDLESS)
        send(elsewhere, "Hold the stream")
        expect(elsewhere.locator(".turn-assistant .turn-text")).to_have_text(
            re.compile(r"tok1\b"))
        page.click("#regenerate")
        status = page.locator("#status")
        expect(status).to_have_class(re.compile("status-error"))
        assert on_screen(page) == before, "the answer before, and no version"
        turn(page, 0).get_by_role("button", name="Edit message").click()
        turn(page, 0).get_by_role("textbox", name="Edit message").fill("Refused, edited")
        page.keyboard.press("Enter")
        box = turn(page, 0).get_by_role("textbox", name="Edit message")
        expect(box).to_have_value("Refused, edited")  # open again, with the text
        expect(status).to_have_text(re.compile(r"already have 1 answers? streaming"))
        page.keyboard.press("Escape")
        assert on_screen(page) == before
        turns, picks = tree(page)
        assert [len(found) for found in turns.values()] == [2] and picks == {}
        elsewhere.click("#stop")
        expect(elsewhere.locator("#status")).to_have_text("Stopped.")
    finally:
        other.close()
