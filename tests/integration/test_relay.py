"""Rill on gunicorn + gevent relaying the simulator through the OpenAI SDK, over real HTTP."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from rill.simulator import BIG_EVENT_BYTES, expected_text
from tests.integration.conftest import API_KEY, ask, relay_env, run_rill, sim_model
from tests.sse_client import Event, events_only, parse, text_of

pytestmark = pytest.mark.integration


def read_all(response: requests.Response) -> list[Event | str]:
    with response:
        assert response.status_code == 200, response.text
        return list(parse(response.iter_content(chunk_size=None)))


def test_first_delta_arrives_before_the_upstream_finishes(rill, simulator) -> None:
    model, tag = sim_model(tokens=10, itl_ms=150)
    with rill.chat(ask(model)) as response:
        items = parse(response.iter_content(chunk_size=None))
        first = next(i for i in items if isinstance(i, Event) and i.event == "delta")
        assert simulator.find(tag)["outcome"] == "running"
        rest = events_only(items)
    assert first.json["content"] + text_of(rest) == expected_text(10)
    assert rest[-1].event == "done"
    assert rest[-1].json["finish_reason"] == "stop"
    assert rest[-1].json["usage"]["completion_tokens"] == 10


def test_api_key_reaches_the_upstream_and_never_the_client_or_log(rill, simulator) -> None:
    model, tag = sim_model(tokens=3)
    items = read_all(rill.chat(ask(model)))
    assert simulator.find(tag)["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert API_KEY not in str(items)
    assert API_KEY not in rill.log()


def test_200_concurrent_streams_finish_in_about_the_time_of_one(rill) -> None:
    model, _ = sim_model(tokens=10, itl_ms=100)

    def one(_: int) -> tuple[str, float]:
        started = time.monotonic()
        events = events_only(read_all(rill.chat(ask(model), timeout=60)))
        return text_of(events) + events[-1].event, time.monotonic() - started

    single = one(0)[1]
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=200) as pool:
        results = list(pool.map(one, range(200)))
    elapsed = time.monotonic() - started
    assert [text for text, _ in results] == [expected_text(10) + "done"] * 200
    # Sequential streams would take 200x one; concurrent ones about one, plus client overhead.
    assert elapsed < single * 8, (single, elapsed)


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"fault": "status", "status": 401}, 502, "upstream_auth"),
        ({"fault": "status", "status": 403}, 502, "upstream_auth"),
        ({"fault": "status", "status": 404}, 502, "upstream_rejected"),
        ({"fault": "status", "status": 429}, 429, "upstream_rate_limited"),
        ({"fault": "status", "status": 500}, 502, "upstream_error"),
        ({"fault": "status", "status": 503}, 502, "upstream_error"),
        ({"fault": "hang"}, 504, "upstream_timeout"),
    ],
)
def test_upstream_failure_before_streaming_is_a_json_http_error(rill, params, status, code):
    model, _ = sim_model(**params)
    with rill.chat(ask(model)) as response:
        assert response.status_code == status
        assert response.headers["Content-Type"] == "application/json"
        error = response.json()["error"]
    assert error["code"] == code
    assert "simulated" not in error["message"], "upstream bodies never reach the client"
    if status == 429:
        assert response.headers["Retry-After"] == "1"


def test_refused_upstream_is_a_502() -> None:
    from tests.integration.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1"
    env = {"OPENAI_BASE_URL": dead, "RILL_UPSTREAM_MAX_RETRIES": "0", "RILL_MODELS": "*"}
    with run_rill(env, "refused") as server, server.chat(ask("any")) as response:
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "upstream_unavailable"


def test_sdk_retries_a_failing_upstream_before_the_first_byte(simulator) -> None:
    model, tag = sim_model(fault="status", status=500, fail_first=1, tokens=3)
    env = relay_env(simulator, RILL_UPSTREAM_MAX_RETRIES="2")
    with run_rill(env, "retry") as server:
        events = events_only(read_all(server.chat(ask(model))))
    assert text_of(events) == expected_text(3)
    assert len([r for r in simulator.requests() if r["params"].get("tag") == tag]) == 2


def test_stream_sends_error_event_when_upstream_cuts_off(rill) -> None:
    model, _ = sim_model(tokens=10, fault="cut", after=4)
    events = events_only(read_all(rill.chat(ask(model))))
    assert text_of(events) == expected_text(4)
    assert (events[-1].event, events[-1].json["code"]) == ("error", "upstream_cut")


def test_stream_sends_upstream_stalled_after_the_stall_timeout(rill) -> None:
    model, _ = sim_model(tokens=10, fault="stall", after=3)
    started = time.monotonic()
    items = read_all(rill.chat(ask(model)))
    events = events_only(items)
    assert text_of(events) == expected_text(3)
    assert (events[-1].event, events[-1].json["code"]) == ("error", "upstream_stalled")
    assert 1.5 < time.monotonic() - started < 10
    assert "ping" in items, "heartbeats flow while the upstream is silent"


def test_heartbeats_flow_while_the_model_thinks(rill) -> None:
    model, _ = sim_model(tokens=2, ttft_ms=1800)
    items = read_all(rill.chat(ask(model)))
    first_delta = next(i for i, item in enumerate(items)
                       if isinstance(item, Event) and item.event == "delta")
    assert items[:first_delta].count("ping") >= 1
    assert text_of(events_only(items)) == expected_text(2)


def wait_idle(rill, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while requests.get(f"{rill.url}/readyz", timeout=2).json()["streams"]:
        assert time.monotonic() < deadline, "the stream slot was never released"
        time.sleep(0.02)


def test_client_disconnect_closes_the_upstream_request(rill, simulator) -> None:
    model, tag = sim_model(tokens=1000, itl_ms=50)
    with rill.chat(ask(model)) as response:
        items = parse(response.iter_content(chunk_size=None))
        deltas = 0
        for item in items:
            if isinstance(item, Event) and item.event == "delta":
                deltas += 1
                if deltas == 3:
                    break
    closed_at = time.monotonic()
    record = simulator.wait_for(tag, lambda r: r["outcome"] == "client_closed", timeout=2)
    assert record["tokens_sent"] < 100
    assert time.monotonic() - closed_at < 2
    wait_idle(rill)


def test_client_disconnect_closes_a_silent_upstream_at_once(rill, simulator) -> None:
    """A disconnect used to be noticed only at the next write, after the upstream spoke."""
    model, tag = sim_model(tokens=10, fault="stall", after=1)
    env_stall = 2  # RILL_STALL_TIMEOUT_SECONDS in relay_env
    with rill.chat(ask(model)) as response:
        items = parse(response.iter_content(chunk_size=None))
        next(i for i in items if isinstance(i, Event) and i.event == "delta")
    closed_at = time.monotonic()
    simulator.wait_for(tag, lambda r: r["outcome"] == "client_closed", timeout=1)
    assert time.monotonic() - closed_at < min(1, env_stall)
    wait_idle(rill)


REASONING = "".join(f"think{i} " for i in range(5))


@pytest.mark.parametrize(
    ("shape", "text", "reasoning", "last"),
    [
        ("usage_chunk", expected_text(8), "", ("done", "stop")),
        ("azure_filter", expected_text(8), "", ("done", "stop")),
        ("null_content", expected_text(8), "", ("done", "stop")),
        ("reasoning_content", expected_text(8), REASONING, ("done", "stop")),
        ("reasoning", expected_text(8), REASONING, ("done", "stop")),
        ("llamacpp", expected_text(8), "", ("done", "stop")),
        ("finish_abort", expected_text(8), "", ("done", "abort")),
        ("finish_null", expected_text(8), "", ("done", None)),
        ("error_in_stream", expected_text(2), "", ("error", "upstream_error")),
        ("malformed", expected_text(2), "", ("error", "upstream_malformed")),
        ("no_done", expected_text(8), "", ("error", "upstream_cut")),
        ("big_event", "x" * BIG_EVENT_BYTES + expected_text(8), "", ("done", "stop")),
        ("multiline", expected_text(8), "", ("done", "stop")),
        ("comments", expected_text(8), "", ("done", "stop")),
    ],
)
def test_each_provider_stream_shape_streams_correctly(rill, shape, text, reasoning, last):
    model, _ = sim_model(tokens=8, shape=shape)
    events = events_only(read_all(rill.chat(ask(model))))
    assert events[0].event == "start"
    assert text_of(events) == text
    assert text_of(events, "reasoning") == reasoning
    final = events[-1]
    detail = final.json["finish_reason"] if final.event == "done" else final.json["code"]
    assert (final.event, detail) == last
    assert [e.id for e in events] == [str(i) for i in range(len(events))]
    if shape in ("usage_chunk", "llamacpp"):
        assert final.json["usage"]["completion_tokens"] == 8


def test_upstream_connections_are_reused_across_streams(rill, simulator) -> None:
    """The SDK's own stream closes the connection at [DONE]; Rill reads to the end."""
    tags = []
    for _ in range(5):
        model, tag = sim_model(tokens=3)
        read_all(rill.chat(ask(model)))
        tags.append(tag)
    connections = {simulator.find(tag)["conn"] for tag in tags}
    assert len(connections) == 1


def test_curl_streams_the_simulators_tokens(rill) -> None:
    import shutil
    import subprocess

    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    model, _ = sim_model(tokens=5, itl_ms=20)
    body = f'{{"messages":[{{"role":"user","content":"Hi"}}],"model":"{model}"}}'
    out = subprocess.run(
        ["curl", "-sN", "-X", "POST", f"{rill.url}/api/chat", "-H",
         "Content-Type: application/json", "-d", body],
        capture_output=True, timeout=30, check=True).stdout
    events = events_only(parse([out]))
    assert text_of(events) == expected_text(5)
    assert events[-1].event == "done"


def test_curl_streams_the_demo_answer_without_any_upstream() -> None:
    import shutil
    import subprocess

    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    env = {"RILL_DEMO_TTFT_MS": "50", "RILL_DEMO_TOKENS_PER_SECOND": "500"}
    with run_rill(env, "demo") as server:
        out = subprocess.run(
            ["curl", "-sN", "-X", "POST", f"{server.url}/api/chat", "-H",
             "Content-Type: application/json", "-d",
             '{"messages":[{"role":"user","content":"Hello!"}]}'],
            capture_output=True, timeout=30, check=True).stdout
        page = requests.get(server.url, timeout=5).text
    events = events_only(parse([out]))
    assert events[0].json["model"] == "rill-demo"
    assert len(text_of(events)) > 100
    assert events[-1].event == "done"
    assert "Demo mode" in page


def test_preloaded_app_still_streams_concurrently(simulator) -> None:
    """With --preload the app imported socket and ssl before the worker patched them, so
    each upstream read blocked the whole worker (and HTTPS upstreams failed outright)."""
    model, _ = sim_model(tokens=10, itl_ms=100)
    with run_rill(relay_env(simulator), "preload", args=("--preload",)) as server:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=20) as pool:
            texts = list(pool.map(
                lambda _: text_of(events_only(read_all(server.chat(ask(model))))), range(20)))
        elapsed = time.monotonic() - started
    assert texts == [expected_text(10)] * 20
    assert elapsed < 8, "20 streams of 1 s ran one after another"
