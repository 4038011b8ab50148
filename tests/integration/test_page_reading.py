"""Reading answers on the chat page in Chromium: code blocks coloured by highlight.js under
the nonce-only CSP, and following a long answer (auto-scroll that stops when the reader
scrolls up, "Jump to latest") (issue 15, "Reading")."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from tests.integration.browser import AXE, expect, send, violations
from tests.integration.conftest import RillServer, relay_env, run_rill

pytestmark = pytest.mark.integration

CODE_TEXT = ("```python\ndef hi():\n  return \"x\" # greet\n```\n"
             "```html\n<script>alert(1)</script>\n```\n```\nno language\n```\n")
CODE = "sim?itl_ms=5&text=" + quote(CODE_TEXT)
TOKENS = 400
LONG = f"sim?itl_ms=25&tokens={TOKENS}"  # some 3000 px high at 375 px


@pytest.fixture(scope="module")
def reading_rill(simulator) -> Iterator[RillServer]:
    env = relay_env(simulator, RILL_MODEL=CODE, RILL_MODELS=f"{CODE},{LONG}")
    with run_rill(env, "page-reading") as server:
        yield server


def colour(locator) -> str:
    return locator.evaluate("el => getComputedStyle(el).color")


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_code_blocks_are_highlighted_with_classes_only(reading_rill, browser, scheme) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme=scheme)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    page.goto(reading_rill.url)
    send(page, "Show me code")
    expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=15_000)
    answer = page.locator(".turn-assistant .turn-text").last
    python = answer.locator("pre code.language-python")
    keyword = python.locator(".hljs-keyword").first
    expect(keyword).to_have_text("def")
    expect(python.locator(".hljs-comment")).to_have_text("# greet")
    assert python.inner_text().rstrip("\n") == 'def hi():\n  return "x" # greet'
    # The theme for the scheme colours the tokens (stylesheets, no style attributes).
    assert colour(keyword) != colour(python)
    assert colour(python.locator(".hljs-string")) != colour(python)
    assert answer.locator("[style]").count() == 0
    html = answer.locator("pre code.language-html")
    assert html.inner_text().rstrip("\n") == "<script>alert(1)</script>"
    assert html.locator(".hljs-tag").count() >= 1
    assert answer.locator("script").count() == 0
    plain = answer.locator("pre code").nth(2)
    assert plain.inner_text().rstrip("\n") == "no language"
    assert plain.locator("span").count() == 0, "no guessing of a language not given"
    expect(answer.locator(".code-lang").first).to_have_text("python")
    assert console == [], console  # no CSP violation, no error
    # Dark and light use different themes.
    expected = {"light": "rgb(121, 40, 161)", "dark": "rgb(220, 198, 224)"}[scheme]
    assert colour(keyword) == expected
    context.close()


def gap_below(page) -> float:
    return page.evaluate("""() => document.documentElement.scrollHeight
        - window.innerHeight - window.scrollY""")


def focused_id(page) -> str:
    return page.evaluate("document.activeElement ? document.activeElement.id : ''")


def test_following_stops_when_scrolled_up_and_jump_to_latest_resumes_it(reading_rill,
                                                                         browser) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 600})
    context.add_init_script(path=str(AXE))
    page = context.new_page()
    page.goto(reading_rill.url)
    page.select_option("#model", LONG)
    send(page, "A long answer")
    answer = page.locator(".turn-assistant .turn-text").last
    jump = page.get_by_role("button", name="Jump to latest")
    expect(answer).to_contain_text("tok100", timeout=10_000)
    assert gap_below(page) <= 48, "the page follows the answer"
    expect(jump).to_be_hidden()

    page.mouse.move(180, 300)
    page.mouse.wheel(0, -300)
    expect(jump).to_be_visible()
    held = page.evaluate("window.scrollY")
    expect(answer).to_contain_text("tok160", timeout=10_000)
    assert page.evaluate("window.scrollY") == held, "scrolling up stops the following"
    assert gap_below(page) > 200
    assert violations(page) == [], "with the button shown"

    page.mouse.wheel(0, 100_000)  # back to the bottom: following resumes
    expect(jump).to_be_hidden()
    expect(answer).to_contain_text("tok200", timeout=10_000)
    assert gap_below(page) <= 48

    page.mouse.wheel(0, -300)
    expect(jump).to_be_visible()
    page.focus("#prompt")
    page.keyboard.press("Shift+Tab")  # the button is just before the composer
    assert focused_id(page) == "jump-latest"
    page.keyboard.press("Enter")
    expect(jump).to_be_hidden()
    assert focused_id(page) == "prompt", "the focus goes on to the composer, not <body>"
    assert gap_below(page) <= 48
    expect(answer).to_contain_text("tok260", timeout=10_000)
    assert gap_below(page) <= 48, "the following resumed"

    page.mouse.wheel(0, -300)
    expect(jump).to_be_visible()
    jump.focus()
    expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=20_000)
    expect(jump).to_be_hidden()  # only while an answer streams
    assert focused_id(page) == "prompt", "the button that goes passes the focus on"
    assert answer.inner_text().endswith(f"tok{TOKENS - 1}")
    context.close()
