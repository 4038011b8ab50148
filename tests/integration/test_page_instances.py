"""The chat page deployed as production runs it: Chromium, nginx, two Rill instances and one
Redis (the Redis hub), with the tabs' requests split across the instances.

nginx sends every ``POST /api/chat`` (a stream's start) to instance A and everything else
(the page, its files, ``GET …/events``, ``POST …/cancel``) to instance B, so each flow
below crosses instances on every run: the page and its CSRF token come from B and the
stream starts on A (a secret shared through Redis), a second tab reads A's stream through
Redis on B, and a Stop pressed there cancels the generation on A. The split is this test's
own nginx configuration; ``tests/integration/test_nginx.py`` runs the shipped one.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from rill.simulator import expected_text
from tests.conftest import RedisServer
from tests.integration.browser import (
    current_conversation,
    expect,
    open_conversation,
    send,
    stored,
)
from tests.integration.conftest import page_env, run_rill
from tests.integration.test_nginx import needs_nginx, run_nginx
from tests.integration.test_page_tabs import DONE, answer, two_tabs, wait_settled

pytestmark = [pytest.mark.integration, needs_nginx]

TOKENS = 160
FULL = expected_text(TOKENS)
MODEL = f"sim?tokens={TOKENS}&itl_ms=50&ttft_ms=100"

SPLIT = """map "$request_method $uri" $rill_instance {{
    "POST /api/chat" rill_a;
    default rill_b;
}}
upstream rill_a {{
    server {a};
    keepalive 8;
}}
upstream rill_b {{
    server {b};
    keepalive 8;
}}
server {{
    listen 127.0.0.1:{port};
    location / {{
        proxy_pass http://$rill_instance;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_buffering off;
        proxy_read_timeout 300s;
    }}
}}
"""


class Deployment:
    def __init__(self, url: str, a, b) -> None:
        self.url, self.a, self.b = url, a, b

    def served(self, instance, method: str, path: str, least: int = 0) -> int:
        """How many ``method path…`` requests ``instance``'s access log shows (a request is
        logged as it ends: waits up to 5 s for at least ``least``)."""
        deadline = time.monotonic() + 5
        while (count := instance.log().count(f'"{method} {path}')) < least:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return count


@contextmanager
def deploy(simulator, **env: str) -> Iterator[Deployment]:
    """Two instances sharing a fresh redis-server, behind nginx splitting them as above."""
    redis = RedisServer()
    env = page_env(simulator, RILL_MODEL=MODEL, RILL_MODELS=MODEL, RILL_REDIS_URL=redis.url,
                   **env)
    try:
        with run_rill(env, "page-instance-a") as a, run_rill(env, "page-instance-b") as b:
            def split(port: int, *_: object) -> str:
                return SPLIT.format(a=a.url.removeprefix("http://"),
                                    b=b.url.removeprefix("http://"), port=port)

            with run_nginx(a, split) as nginx:
                yield Deployment(nginx.http_url, a, b)
    finally:
        redis.stop()


@pytest.fixture(scope="module")
def deployment(simulator) -> Iterator[Deployment]:
    with deploy(simulator) as deployed:
        yield deployed


def test_a_tab_on_the_other_instance_follows_the_answer_and_its_stop_stops_it(
        deployment, context, simulator) -> None:
    first, second = two_tabs(context, deployment.url, "Stream across instances", "tok5")
    expect(answer(second)).to_have_text(re.compile(r"tok\d+"), timeout=2_000)
    expect(second.locator("#status")).to_have_text(re.compile("^Generating"))
    expect(answer(second)).to_have_text(re.compile(r"tok2\d\b"), timeout=10_000)  # live
    second.click("#stop")
    for page in (first, second):
        expect(page.locator("#status")).to_have_text(re.compile("^Stopped"), timeout=10_000)
    wait_settled(first)
    wait_settled(second)
    [reply] = [t for t in stored(first)[current_conversation(first)] if t["role"] == "assistant"]
    assert reply["status"] == "stopped"
    assert 0 < len(reply["content"]) < len(FULL) and FULL.startswith(reply["content"])
    assert stored(second) == stored(first)
    # The page (and its CSRF token) came from B, the stream started on A (each request is
    # logged as it ends); read on B from Redis, cancelled from B: A's generation stopped.
    assert deployment.served(deployment.b, "GET", "/ HTTP") >= 2
    assert deployment.served(deployment.a, "POST", "/api/chat HTTP", least=1) == 1
    assert deployment.served(deployment.a, "GET", "/ HTTP") == 0
    assert deployment.served(deployment.a, "GET", "/api/") == 0
    assert deployment.served(deployment.b, "GET", "/api/chat/", least=1) >= 1
    assert deployment.served(deployment.b, "POST", "/api/chat/", least=1) == 1  # …/cancel
    outcomes = {r["body"]["messages"][-1]["content"]: r["outcome"] for r in simulator.requests()}
    assert outcomes["Stream across instances"] == "client_closed"


def test_a_follow_up_asked_in_another_tab_runs_on_a_and_shows_in_both(deployment,
                                                                        context) -> None:
    first, second = two_tabs(context, deployment.url, "First question", "tok2")
    expect(first.locator("#status")).to_have_text(DONE, timeout=20_000)
    conversation = current_conversation(first)
    open_conversation(second, conversation)
    send(second, "Second question")
    expect(answer(first)).to_have_text(re.compile(r"tok\d+"))  # first follows it, through B
    expect(second.locator("#status")).to_have_text(DONE, timeout=20_000)
    expect(first.locator("#status")).to_have_text(DONE, timeout=20_000)
    wait_settled(first)
    assert [(t["role"], t["content"], t["status"]) for t in stored(first)[conversation]] == [
        ("user", "First question", None), ("assistant", FULL, None),
        ("user", "Second question", None), ("assistant", FULL, None)]
    expect(answer(first)).to_have_text(FULL.strip())
    expect(answer(second)).to_have_text(FULL.strip())


def test_an_instance_killed_mid_answer_leaves_every_token_it_wrote_in_both_tabs(
        simulator, context) -> None:
    """kill -9 of A (its arbiter too) mid-answer: both tabs keep the text written so far,
    say the answer is incomplete (``producer_lost`` from B, within the lease) and agree."""
    with deploy(simulator, RILL_PRODUCER_LEASE_SECONDS="2") as deployment:
        first, second = two_tabs(context, deployment.url, "Stream, then lose A", "tok5")
        expect(answer(second)).to_have_text(re.compile(r"tok1\d\b"), timeout=10_000)
        seen = answer(second).inner_text()
        for pid in deployment.a.pids():  # the worker, then its arbiter: A is gone
            os.kill(pid, signal.SIGKILL)
        for page in (first, second):
            expect(page.locator("#status")).to_have_text(
                re.compile("^The server generating this answer stopped"), timeout=15_000)
        wait_settled(first)
        wait_settled(second)
        conversation = current_conversation(first)
        assert stored(second)[conversation] == stored(first)[conversation]
        reply = stored(first)[conversation][-1]
        assert reply["status"] == "failed"
        assert reply["content"].startswith(seen) and FULL.startswith(reply["content"])
        assert len(reply["content"]) < len(FULL)
        expect(answer(first)).to_have_text(reply["content"].strip())
