"""Server-side tools through gunicorn + gevent and the simulator (issue 17, item 2): a step
that ends with server tool calls runs them between model steps, in one stream.

The tools are tests/integration/server_tools.py; the simulator's ``steps=S`` answers with tool
calls until the conversation holds S - 1 rounds of them, then with text.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

from rill.simulator import expected_text, tool_call_arguments
from tests.integration.conftest import RillServer, relay_env, run_rill, sim_model
from tests.integration.server_tools import SECRET
from tests.integration.test_client_tools import calls_of, read
from tests.sse_client import Event, events_only, parse, text_of

pytestmark = pytest.mark.integration

USER = {"role": "user", "content": "What is the weather in Paris and Tokyo?"}


def server_env(simulator, marks: Path, **overrides: str) -> dict[str, str]:
    return relay_env(simulator, RILL_TOOLS="tests.integration.server_tools",
                     RILL_MAX_TOOL_STEPS="3", RILL_CLIENT_TOOLS="true",
                     RILL_ORPHAN_GRACE_SECONDS="30", TOOL_MARKS=str(marks), **overrides)


@pytest.fixture(scope="module")
def marks(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tools") / "marks"
    path.touch()
    return path


@pytest.fixture(scope="module")
def tools_rill(simulator, marks) -> Iterator[RillServer]:
    with run_rill(server_env(simulator, marks), "server-tools") as server:
        yield server


def kinds(events: list[Event]) -> list[str]:
    """The event kinds with runs of one kind counted once."""
    return [kind for kind, _ in itertools.groupby(e.event for e in events)]


def results_of(events: list[Event]) -> list[dict]:
    return [e.json for e in events if e.event == "tool_result"]


def test_server_tools_run_between_three_model_steps_in_one_stream(tools_rill, simulator):
    model, tag = sim_model(tools="openai", calls=2, pre=2, tokens=6, steps=3, call="weather",
                           itl_ms=1)
    events = read(tools_rill.chat({"messages": [USER], "model": model}))
    assert [e.id for e in events] == [str(i) for i in range(len(events))]
    assert kinds(events) == ["start", "delta", "tool_call", "tool_result", "delta",
                             "tool_call", "tool_result", "delta", "done"]
    assert text_of(events) == expected_text(2) * 2 + expected_text(6)  # byte-exact
    calls = calls_of(events)  # indexes count on across the steps: 0 to 3
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("weather", tool_call_arguments(i % 2)) for i in range(4)]
    results = results_of(events)
    assert [(r["id"], r["name"], r["ok"], r["content"]) for r in results] == [
        (c["id"], "weather", True, f"Sunny in {city} (call {i % 2})")
        for i, (c, city) in enumerate(zip(calls, ["Paris", "Tokyo"] * 2, strict=True))]
    assert all(isinstance(r["elapsed_ms"], float) for r in results)
    done = events[-1].json
    assert done["finish_reason"] == "stop"
    assert done["usage"]["completion_tokens"] == (2 + 2) * 2 + 6  # summed over the steps
    first, second, third = simulator.requests(tag)
    offered = [t["function"]["name"] for t in first["body"]["tools"]]
    assert "weather" in offered and "admin_only" not in offered  # not this user's
    assert second["body"]["messages"] == [
        USER, {"role": "assistant", "content": expected_text(2), "tool_calls": calls[:2]},
        *({"role": "tool", "tool_call_id": r["id"], "content": r["content"]}
          for r in results[:2])]
    assert third["body"]["messages"][-1]["tool_call_id"] == calls[3]["id"]
    metrics = requests.get(f"{tools_rill.url}/metrics", timeout=5).text
    assert 'rill_tool_calls_total{outcome="ok",tool="weather"}' in metrics


@pytest.mark.parametrize(("tool", "content"), [
    ("explode", "The tool explode failed (RuntimeError)."),
    ("slow", "The tool slow did not finish within 0.5 s."),
    ("admin_only", "No tool named 'admin_only' is available."),
])
def test_a_failed_tool_call_is_a_result_the_model_gets(tools_rill, simulator, tool, content):
    """A tool that raises (only its class name shows; the secret in its message is in
    neither the stream nor the log), one that times out, and one this user may not call
    (refused, not run)."""
    model, tag = sim_model(tools="openai", steps=2, call=tool, tokens=3, itl_ms=1)
    with tools_rill.chat({"messages": [USER], "model": model}) as response:
        raw = response.content
    events = events_only(parse([raw]))
    assert kinds(events) == ["start", "tool_call", "tool_result", "delta", "done"]
    (result,) = results_of(events)
    assert (result["name"], result["ok"], result["content"]) == (tool, False, content)
    assert text_of(events) == expected_text(3)
    follow_up = simulator.requests(tag)[1]["body"]["messages"][-1]
    assert follow_up == {"role": "tool", "tool_call_id": result["id"], "content": content}
    assert SECRET.encode() not in raw and SECRET not in tools_rill.log()


def test_a_tool_step_longer_than_the_stall_timeout_is_not_a_stall(tools_rill, marks):
    model, _ = sim_model(tools="openai", steps=2, call="dawdle", tokens=3, args=orjson.dumps(
        {"location": "patience", "call": 0}).decode())
    events = read(tools_rill.chat({"messages": [USER], "model": model}))
    assert results_of(events)[0]["content"] == "dawdled in patience"
    assert events[-1].event == "done" and text_of(events) == expected_text(3)


def test_a_cancel_during_a_tool_step_stops_the_tool_and_ends_the_stream_cancelled(
        tools_rill, simulator, marks):
    model, tag = sim_model(tools="openai", steps=2, call="dawdle", args=orjson.dumps(
        {"location": "cancelled", "call": 0}).decode())
    seen: list[Event] = []
    with tools_rill.chat({"messages": [USER], "model": model}) as response:
        items = parse(response.iter_content(chunk_size=None))
        for item in items:
            if isinstance(item, Event):
                seen.append(item)
                if item.event == "tool_call":
                    break
        time.sleep(1)  # in the tool step now
        stream_id = seen[0].json["stream_id"]
        cancelled_at = time.monotonic()
        assert requests.post(f"{tools_rill.url}/api/chat/{stream_id}/cancel",
                             timeout=5).status_code == 202
        seen += events_only(items)
    assert time.monotonic() - cancelled_at < 1.5
    assert seen[-1].event == "done" and seen[-1].json["finish_reason"] == "cancelled"
    assert "tool_result" not in kinds(seen)
    time.sleep(3)  # the tool would have noted itself by now
    assert "cancelled" not in marks.read_text().split()
    assert len(simulator.requests(tag)) == 1  # no second model step


def test_more_model_steps_than_allowed_end_with_an_error_after_all_that_was_said(
        tools_rill, simulator):
    model, tag = sim_model(tools="openai", steps=4, call="weather", pre=1, itl_ms=1)
    events = read(tools_rill.chat({"messages": [USER], "model": model}))
    assert kinds(events) == ["start", "delta", "tool_call", "tool_result", "delta",
                             "tool_call", "tool_result", "delta", "tool_call", "error"]
    assert events[-1].json["code"] == "tool_steps_exceeded"
    assert len(results_of(events)) == 2  # the third step's call is not run
    assert len(simulator.requests(tag)) == 3


def test_a_client_tool_call_ends_the_stream_for_the_client_as_before(tools_rill, simulator):
    client_tool = {"type": "function", "function": {"name": "get_time"}}
    model, tag = sim_model(tools="openai", calls=2, call="weather,get_time", steps=3)
    events = read(tools_rill.chat({"messages": [USER], "model": model,
                                   "tools": [client_tool]}))
    assert kinds(events) == ["start", "tool_call", "done"]
    assert events[-1].json["finish_reason"] == "tool_calls"
    (only,) = simulator.requests(tag)  # offered the client's tools and the server's
    offered = [t["function"]["name"] for t in only["body"]["tools"]]
    assert offered[0] == "get_time" and {"weather", "dawdle"} <= set(offered)


def test_a_client_tool_named_as_a_server_tool_is_a_400(tools_rill, simulator):
    model, tag = sim_model(tools="openai")
    response = tools_rill.chat({"messages": [USER], "model": model, "tools": [
        {"type": "function", "function": {"name": "weather"}}]})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_tools", "tools[0].function.name")
    assert simulator.requests(tag) == []


@contextlib.contextmanager
def two_instances(request, simulator, marks, backend: str) -> Iterator[tuple[RillServer,
                                                                             RillServer]]:
    if backend == "memory":
        server = request.getfixturevalue("tools_rill")
        yield server, server
        return
    env = server_env(simulator, marks, RILL_REDIS_URL=request.getfixturevalue(
        "redis_server").url)
    with run_rill(env, "server-tools-a") as a, run_rill(env, "server-tools-b") as b:
        yield a, b


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_resume_mid_way_through_step_two_replays_the_whole_answer(request, simulator, marks,
                                                                    backend):
    with two_instances(request, simulator, marks, backend) as (a, b):
        model, _ = sim_model(tools="openai", steps=3, call="weather", pre=3, tokens=5,
                             itl_ms=40)
        first: list[Event] = []
        with a.chat({"messages": [USER], "model": model}) as response:
            for item in parse(response.iter_content(chunk_size=None)):
                if isinstance(item, Event):
                    first.append(item)
                    if "tool_result" in kinds(first) and first[-1].event == "delta":
                        break  # step two has begun
        stream_id = first[0].json["stream_id"]
        rest = read(requests.get(f"{b.url}/api/chat/{stream_id}/events", stream=True,
                                 headers={"Last-Event-ID": first[-1].id}, timeout=30))
        events = first + rest
        assert [e.id for e in events] == [str(i) for i in range(len(events))]
        assert kinds(events) == ["start", "delta", "tool_call", "tool_result", "delta",
                                 "tool_call", "tool_result", "delta", "done"]
        assert text_of(events) == expected_text(3) * 2 + expected_text(5)
        again = events_only(parse([requests.get(f"{b.url}/api/chat/{stream_id}/events",
                                                timeout=30).content]))
        assert [(e.id, e.event, e.data) for e in again] == [
            (e.id, e.event, e.data) for e in events]
