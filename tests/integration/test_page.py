"""The chat page in a real Chromium (Debian's), against gunicorn and the simulator."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rill.simulator import expected_text
from tests.integration.browser import answer_text, expect, send
from tests.integration.conftest import ARTIFACTS, RillServer, page_env, relay_env, run_rill

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def paced_rill(simulator) -> Iterator[RillServer]:
    env = page_env(simulator, RILL_MODEL="sim?tokens=30&itl_ms=60&ttft_ms=200")
    with run_rill(env, "page") as server:
        yield server


def test_answer_streams_into_the_page_token_by_token(paced_rill, page) -> None:
    page.goto(paced_rill.url)
    page.fill("#prompt", "Tell me something")
    page.keyboard.press("Enter")
    expect(page.locator(".turn-assistant .turn-text")).to_have_text(re.compile(r"\S"))
    partial = answer_text(page)
    expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=15_000)
    final = answer_text(page)
    assert partial != final and final.startswith(partial), "text grew over time"
    assert final == expected_text(30).strip() or final == expected_text(30)
    assert page.locator(".turn-user .turn-text").inner_text() == "Tell me something"
    assert not [m for m in page.console_messages if "Content Security Policy" in m]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-desktop.png"))


def test_stop_ends_the_answer_and_keeps_the_partial_text(paced_rill, page, simulator) -> None:
    page.goto(paced_rill.url)
    page.fill("#prompt", "Go on")
    page.click("#send")
    expect(page.locator(".turn-assistant .turn-text")).to_have_text(re.compile(r"tok3"))
    page.click("#stop")
    expect(page.locator("#status")).to_have_text("Stopped.")
    partial = answer_text(page)
    assert 0 < len(partial) < len(expected_text(30).strip())
    deadline = time.monotonic() + 2
    while True:
        mine = [r for r in simulator.requests() if r["body"]["messages"][-1]["content"] == "Go on"]
        if mine[-1]["outcome"] == "client_closed":
            break
        assert time.monotonic() < deadline, "the simulator never saw its upstream closed"
        time.sleep(0.02)
    assert mine[-1]["tokens_sent"] < 30


# The cases tests/test_sse.py runs on the upstream parser, here on static/sse.js: the module
# the page imported (under the page's CSP, through a nonced module script), with each case's
# bytes cut at every boundary and byte by byte, through readBody's streaming TextDecoder.
SSE_CASES = json.loads((Path(__file__).parents[1] / "sse_cases.json").read_text("utf-8"))["cases"]
RUN_SSE_CASES = """async (cases) => {
    const nonce = document.querySelector("script[nonce]").nonce;
    const entry = document.querySelector('script[type="module"]').src;
    const loader = document.createElement("script");
    loader.type = "module";
    loader.nonce = nonce;
    loader.textContent = `import * as sse from ${JSON.stringify(new URL("sse.js", entry).href)};
        window.rillSse = sse;`;
    document.head.append(loader);
    while (!window.rillSse) await new Promise((resolve) => setTimeout(resolve, 10));
    const { createParser, readBody } = window.rillSse;
    const encoder = new TextEncoder();
    const parse = async (pieces) => {
        const events = [];
        const body = new ReadableStream({ start(controller) {
            pieces.forEach((piece) => controller.enqueue(piece));
            controller.close();
        } });
        await readBody(body, createParser((e) => events.push([e.event, e.data, e.id])));
        return JSON.stringify(events);
    };
    const wrong = [];
    for (const c of cases) {
        const chunks = c.chunks.map((text) => encoder.encode(text));
        const stream = encoder.encode(c.chunks.join(""));
        const splits = [chunks, Array.from(stream, (byte) => Uint8Array.of(byte))];
        for (let i = 0; i <= stream.length; i += 1) {
            splits.push([stream.slice(0, i), stream.slice(i)]);
        }
        const expected = JSON.stringify(c.events.map((e) => [e.event, e.data, e.id]));
        for (const pieces of splits) {
            const got = await parse(pieces);
            if (got !== expected) {
                const bytes = pieces.map((piece) => Array.from(piece));
                wrong.push({ name: c.name, pieces: bytes, got, expected });
                break;
            }
        }
    }
    return wrong;
}"""


def test_the_page_parses_the_shared_sse_cases(paced_rill, page) -> None:
    page.goto(paced_rill.url)
    wrong = page.evaluate(RUN_SSE_CASES, SSE_CASES)
    assert wrong == []
    assert not [m for m in page.console_messages if "Content Security Policy" in m]


def test_error_before_the_stream_shows_its_message(simulator, browser) -> None:
    env = relay_env(simulator, RILL_MODEL="sim?fault=status&status=401")
    with run_rill(env, "page-error") as server:
        page = browser.new_page()
        page.goto(server.url)
        page.fill("#prompt", "Hi")
        page.keyboard.press("Enter")
        expect(page.locator("#status")).to_have_class(re.compile("status-error"))
        assert "credentials" in page.locator("#status").inner_text()
        page.close()


def test_page_works_at_375_px_in_dark_mode(paced_rill, browser) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740},
                                  color_scheme="dark")
    page = context.new_page()
    page.goto(paced_rill.url)
    page.fill("#prompt", "Hi")
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=15_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=str(ARTIFACTS / "page-375-dark.png"))
    context.close()


# Resilience, safety and looks (issue "The chat page people use every day").

FULL = expected_text(30).strip()


@pytest.fixture
def cut_proxy(paced_rill) -> Iterator[str]:
    """A proxy in front of Rill that cuts the first chat stream after ~10 deltas."""
    import subprocess
    import sys

    port = paced_rill.url.rsplit(":", 1)[1]
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("cut_proxy.py")), port, "900"],
        stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("ready "), line
    yield f"http://127.0.0.1:{line.split()[1]}"
    process.kill()
    process.wait()
    process.stdout.close()


def test_answer_cut_by_the_network_resumes_with_each_token_once(paced_rill, cut_proxy,
                                                                  page) -> None:
    page.goto(cut_proxy)
    send(page, "Survive a blip")
    expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=20_000)
    assert answer_text(page) == FULL
    assert re.search(r"GET /api/chat/[\w-]+/events", paced_rill.log()), "it resumed"
    assert not [m for m in page.console_messages if "Content Security Policy" in m]


def test_reload_mid_answer_picks_the_answer_up_again(paced_rill, page) -> None:
    page.goto(paced_rill.url)
    send(page, "Reload me")
    expect(page.locator(".turn-assistant .turn-text").last).to_have_text(
        re.compile(r"tok5\b"))
    page.reload()
    expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=20_000)
    assert answer_text(page) == FULL
    assert page.locator(".turn-assistant").count() == 1
    assert page.locator(".turn-user .turn-text").last.inner_text() == "Reload me"


XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    "[click me](javascript:alert(3))",
    "[data link](data:text/html;base64,PHNjcmlwdD5hbGVydCg0KTwvc2NyaXB0Pg==)",
    "<svg onload=alert(5)><circle r=10 /></svg>",
    '<a href="javascript:alert(6)">raw link</a>',
    '![pic](x" onerror="alert(7))',
    '<iframe src="javascript:alert(8)"></iframe>',
    "<details open ontoggle=alert(9)>x</details>",
    '<style>body{display:none}</style><form action="https://evil.example"><input></form>',
    "`<b>code</b>` and **bold** END-OF-PAYLOADS",
]


def test_model_output_is_never_executable(simulator, browser) -> None:
    from urllib.parse import quote

    text = "\n\n".join(XSS_PAYLOADS)
    env = relay_env(simulator, RILL_MODEL=f"sim?itl_ms=5&text={quote(text)}")
    with run_rill(env, "page-xss") as server:
        context = browser.new_context()
        page = context.new_page()
        dialogs: list[str] = []
        console: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: console.append(m.text))
        page.goto(server.url)
        send(page, "Show me the payloads")
        expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=20_000)
        answer = page.locator(".turn-assistant .turn-text").last
        assert "END-OF-PAYLOADS" in answer.inner_text()
        assert "alert(1)" in answer.inner_text(), "raw HTML is shown as text"
        dangerous = answer.evaluate("""el => {
            const bad = [];
            for (const node of el.querySelectorAll('*')) {
                for (const attr of node.attributes) {
                    if (attr.name.startsWith('on')) bad.push(node.tagName + ' ' + attr.name);
                    if (/^\\s*(javascript|data):/i.test(attr.value)) bad.push(attr.value);
                }
                if (['SCRIPT', 'IFRAME', 'SVG', 'STYLE', 'FORM', 'INPUT', 'OBJECT', 'EMBED']
                        .includes(node.tagName.toUpperCase())) bad.push(node.tagName);
            }
            return bad;
        }""")
        assert dangerous == []
        page.wait_for_timeout(300)
        assert dialogs == []
        assert not [m for m in console if "Content Security Policy" in m or "alert" in m]
        context.close()


MARKDOWN = ("## A heading\n\nSome *emphasis*, a [link](https://example.com) and a list:\n\n"
            "- one\n- two\n\n```python\ndef hello():\n    return \"world\"\n```\n\n"
            "| a | b |\n|---|---|\n| 1 | 2 |\n")


@pytest.mark.parametrize(("width", "scheme"), [(1280, "light"), (1280, "dark"),
                                               (375, "light"), (375, "dark")])
def test_screenshots_mid_stream_and_with_a_code_block(simulator, browser, width,
                                                       scheme) -> None:
    from urllib.parse import quote

    env = relay_env(simulator, RILL_MODEL=f"sim?itl_ms=60&text={quote(MARKDOWN)}")
    with run_rill(env, f"page-shots-{width}-{scheme}") as server:
        context = browser.new_context(viewport={"width": width, "height": 800},
                                      color_scheme=scheme)
        page = context.new_page()
        page.goto(server.url)
        send(page, "Show me some Markdown")
        answer = page.locator(".turn-assistant .turn-text").last
        expect(answer).to_have_text(re.compile("emphasis"), timeout=10_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"page-{width}-{scheme}-streaming.png"))
        expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=20_000)
        assert answer.locator("h2").inner_text() == "A heading"
        assert answer.locator("pre code").inner_text().startswith("def hello():")
        assert answer.locator("table td").count() == 2
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        page.screenshot(path=str(ARTIFACTS / f"page-{width}-{scheme}-code.png"))
        context.close()


def test_a_hidden_tab_releases_its_stream_and_resumes_when_shown(simulator, page) -> None:
    """Ten tabs must not hold the browser's six HTTP/1.1 connections per origin."""
    env = page_env(simulator, RILL_MODEL="sim?tokens=100&itl_ms=60")
    with run_rill(env, "page-hidden") as server:
        page.goto(server.url)
        send(page, "Hide and seek")
        expect(page.locator(".turn-assistant .turn-text").last).to_have_text(
            re.compile(r"tok2\b"))
        set_visibility(page, "hidden")
        page.wait_for_timeout(3000)  # released after 2 s hidden; the server goes on
        assert "POST /api/chat" in server.log(), "the first stream was let go"
        set_visibility(page, "visible")
        expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=20_000)
        assert answer_text(page) == expected_text(100).strip()
        assert re.search(r"GET /api/chat/[\w-]+/events", server.log()), "it resumed"


def set_visibility(page, state: str) -> None:
    page.evaluate("""state => {
        Object.defineProperty(document, 'visibilityState', {value: state, configurable: true});
        Object.defineProperty(document, 'hidden', {value: state === 'hidden',
                                                   configurable: true});
        document.dispatchEvent(new Event('visibilitychange'));
    }""", state)


def test_conversations_stay_with_the_user_who_had_them(simulator, browser) -> None:
    """One browser, two people: after alice signs out and bob signs in (a host's login),
    bob's page shows none of alice's conversations, and they are gone from the browser."""
    env = relay_env(simulator, RILL_MODEL="sim?tokens=3")
    with run_rill(env, "page-users", target="tests.legacy_app:app",
                  health="/assistant/healthz") as server:
        context = browser.new_context()
        page = context.new_page()
        assert page.goto(f"{server.url}/assistant/").status == 401, "no login page to send to"
        for name in ("alice", "bob"):
            page.request.post(f"{server.url}/login/{name}")
            page.goto(f"{server.url}/assistant/")
            expect(page.locator("#conversation-list li")).to_have_count(0)
            page.fill("#prompt", f"a secret of {name}")
            page.keyboard.press("Enter")
            expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=15_000)
            expect(page.locator("#conversation-list li")).to_have_count(1)
            stored = page.evaluate("JSON.stringify(Object.entries(localStorage))")
            assert f"a secret of {name}" in stored
            assert "a secret of alice" not in stored or name == "alice"
            page.request.post(f"{server.url}/logout")
        page.request.post(f"{server.url}/login/alice")
        page.goto(f"{server.url}/assistant/")
        assert "a secret of" not in page.evaluate("JSON.stringify(localStorage)"), \
            "bob's conversations left with bob; alice's had left when bob came"
        expect(page.locator("#conversation-list li")).to_have_count(0)
        context.close()


def test_thinking_says_how_long_it_took_once_the_answer_begins(simulator, page) -> None:
    env = relay_env(simulator,
                    RILL_MODEL="sim?shape=reasoning&reasoning_tokens=15&tokens=15&itl_ms=80")
    with run_rill(env, "page-thinking") as server:
        page.goto(server.url)
        send(page, "Think first")
        thinking = page.locator(".turn-assistant .thinking")
        expect(thinking.locator(".thinking-text")).to_contain_text("think0")
        expect(thinking.locator("summary")).to_have_text("Thinking…")
        thought = re.compile(r"^Thought for \d+(\.\d)? s$")
        expect(thinking.locator("summary")).to_have_text(thought)
        expect(page.locator("#status")).to_have_text(re.compile("^Done"), timeout=15_000)
        assert thinking.locator(".thinking-text").text_content() == "".join(
            f"think{i} " for i in range(15))
        assert answer_text(page) == expected_text(15).strip()
        page.reload()
        expect(thinking.locator("summary")).to_have_text(thought)
        assert "think14" in thinking.locator(".thinking-text").text_content()
