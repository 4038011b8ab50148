"""Tool steps on the chat page (issue 17, item 4), in Chromium: each step a collapsible line in
order with the answer's text, its arguments and result shown as text only, kept for a reload
and shown once after a resume. The stream is Rill's events, served by ``page.route`` from
tests/integration/tool_steps.py (gunicorn serves the page)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.integration.browser import AXE, expect, send, violations
from tests.integration.conftest import ARTIFACTS, RillServer, page_env, run_rill
from tests.integration.tool_steps import (
    EXPECTED,
    EXPECTED_DETAILS,
    HOSTILE,
    events,
    route_chat,
    shown_answer,
)
from tests.sse_client import events_only, parse

pytestmark = pytest.mark.integration

DONE = re.compile("^Done")


@pytest.fixture(scope="module")
def tools_rill(simulator) -> Iterator[RillServer]:
    with run_rill(page_env(simulator), "page-tools") as server:
        yield server


def steps(page):
    return page.locator(".turn-assistant .turn-text .tool-step")


def test_tool_steps_show_in_order_with_the_text_and_stay_text(tools_rill, page) -> None:
    served = route_chat(page, events())
    page.goto(tools_rill.url)
    send(page, "Where is my order?")
    expect(page.locator("#status")).to_have_text(DONE, timeout=15_000)
    assert shown_answer(page) == EXPECTED
    expect(steps(page).first.locator("summary")).to_have_accessible_name(
        "Tool lookup_order · 0.4 s · ok")
    for i, (arguments, result) in enumerate(EXPECTED_DETAILS):
        step = steps(page).nth(i)
        assert step.get_attribute("open") is None, "collapsed at first"
        if i == 0:  # by keyboard
            step.locator("summary").focus()
            page.keyboard.press("Enter")
        else:
            step.locator("summary").click()
        args = step.locator(".tool-arguments")
        expect(args).to_be_visible()
        assert args.text_content() == arguments
        assert step.locator(".tool-result").text_content() == result
        for region in (args, step.locator(".tool-result")):
            assert region.get_attribute("tabindex") == "0"
            expect(region).to_have_accessible_name(re.compile(r"^(Arguments|Result) of \w+"))
    hostile = steps(page).nth(1).locator(".tool-result")
    expect(hostile).to_have_text(HOSTILE)  # seen literally
    answer = page.locator(".turn-assistant .turn-text")
    assert answer.locator("img, script").count() == 0
    page.wait_for_timeout(200)
    assert page.evaluate("window.__pwned") is None
    long = steps(page).nth(2).locator(".tool-result")
    assert long.evaluate("el => el.scrollHeight > el.clientHeight"), "long content scrolls"
    page.reload()
    expect(page.locator(".turn-assistant")).to_have_count(1)
    assert shown_answer(page) == EXPECTED, "the steps come back from storage"
    assert served == ["POST"]
    steps(page).nth(1).locator("summary").click()
    expect(steps(page).nth(1).locator(".tool-result")).to_have_text(HOSTILE)
    assert page.evaluate("window.__pwned") is None
    assert not [m for m in page.console_messages if "Content Security Policy" in m]


@pytest.mark.parametrize("reload", [False, True])
def test_a_resumed_answer_shows_each_tool_step_once(tools_rill, page, reload) -> None:
    """The POST's body ends with the last call running; the page resumes after its last
    event id (by itself, or from what it stored when reloaded) and shows every step once."""
    stream = events()
    cut_at = next(i for i, (name, data) in enumerate(stream)
                  if name == "tool_result" and data["id"] == "call_c")
    switch = {"on": not reload}
    served = route_chat(page, stream, cut_at=cut_at, resumable=switch)
    page.goto(tools_rill.url)
    send(page, "Where is my order?")
    if reload:
        expect(steps(page).nth(2).locator("summary")).to_have_text(
            "🔧 lookup_order · running…")
        expect(page.locator("#status")).to_have_text("Reconnecting…")
        switch["on"] = True
        page.reload()
    expect(page.locator("#status")).to_have_text(DONE, timeout=15_000)
    assert shown_answer(page) == EXPECTED
    assert f"GET {cut_at - 1}" in served
    assert page.locator(".turn-assistant").count() == 1


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", [1280, 375])
def test_axe_finds_no_violation_with_tool_steps(tools_rill, browser, width, scheme) -> None:
    context = browser.new_context(viewport={"width": width, "height": 800},
                                  color_scheme=scheme)
    context.add_init_script(path=str(AXE))
    page = context.new_page()
    route_chat(page, events())
    page.goto(tools_rill.url)
    send(page, "Where is my order?")
    expect(page.locator("#status")).to_have_text(DONE, timeout=15_000)
    expect(steps(page)).to_have_count(3)
    found = violations(page)
    assert found == [], "collapsed:\n" + "\n".join(found)
    for i in range(3):
        steps(page).nth(i).locator("summary").click()
    expect(steps(page).nth(2).locator(".tool-result")).to_be_visible()
    found = violations(page)
    assert found == [], "expanded:\n" + "\n".join(found)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"page-tools-{width}-{scheme}.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    context.close()


def test_real_server_tools_show_in_order_and_their_result_stays_text(simulator, page) -> None:
    """End to end: gunicorn runs a host's tool between two model steps of the simulator;
    the page shows the text, the step and the text after it, as the API streams them."""
    import json

    import requests

    model = "sim?tools=openai&steps=2&call=read_note&pre=3&tokens=5&itl_ms=20"
    env = page_env(simulator, RILL_TOOLS="tests.integration.page_tools", RILL_MODEL=model)
    with run_rill(env, "page-tools-e2e") as server:
        with requests.post(f"{server.url}/api/chat", json={
                "messages": [{"role": "user", "content": "Where is my order?"}]},
                stream=True, timeout=30) as api:
            parsed = [(e.event, json.loads(e.data)) for e in events_only(
                parse(api.iter_content(chunk_size=None)))]
        kinds = [k for k, _ in parsed]
        first_call, result = kinds.index("tool_call"), kinds.index("tool_result")
        before = "".join(d["content"] for k, d in parsed[:first_call] if k == "delta")
        after = "".join(d["content"] for k, d in parsed[result:] if k == "delta")
        assert parsed[result][1]["content"] == HOSTILE and before and after
        page.goto(server.url)
        send(page, "Where is my order?")
        expect(page.locator("#status")).to_have_text(DONE, timeout=15_000)
        shown = shown_answer(page)
        assert [k for k, _ in shown] == ["text", "step", "text"], shown
        assert (shown[0][1], shown[2][1]) == (before.strip(), after.strip())
        assert re.fullmatch(r"🔧 read_note · [\d.]+ (ms|s) · ok", shown[1][1]), shown
        steps(page).first.locator("summary").click()
        expect(steps(page).first.locator(".tool-result")).to_have_text(HOSTILE)
        assert page.locator(".turn-assistant .turn-text").locator("img, script").count() == 0
        assert page.evaluate("window.__pwned") is None
