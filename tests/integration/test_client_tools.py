"""Client tools through gunicorn + gevent and the simulator (issue 17, item 1): a request
offering tools streams ``tool_call`` events and ends ``done`` ``tool_calls``; its follow-up
carrying the results is answered in text; every server's shape; resume; refusals."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import requests

from rill.simulator import TOOL_SHAPES, expected_text, tool_call_arguments
from tests.integration.conftest import RillServer, relay_env, run_rill, sim_model
from tests.sse_client import Event, events_only, parse, text_of

pytestmark = pytest.mark.integration

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}},
         {"type": "function", "function": {"name": "get_time"}}]
USER = {"role": "user", "content": "Weather and time in Paris?"}


@pytest.fixture(scope="module")
def tools_rill(simulator) -> Iterator[RillServer]:
    env = relay_env(simulator, RILL_CLIENT_TOOLS="true", RILL_ORPHAN_GRACE_SECONDS="30")
    with run_rill(env, "client-tools") as server:
        yield server


def read(response: requests.Response) -> list[Event]:
    with response:
        assert response.status_code == 200, response.text
        return events_only(parse(response.iter_content(chunk_size=None)))


def calls_of(events: list[Event]) -> list[dict]:
    """Join the ``tool_call`` events into OpenAI's assistant ``tool_calls``, checking the
    event contract: the first event of each call has its id and name, later ones null."""
    calls: dict[int, dict] = {}
    for event in events:
        if event.event != "tool_call":
            continue
        data = event.json
        assert set(data) == {"index", "id", "name", "arguments"}
        if data["index"] not in calls:
            assert data["index"] == len(calls)
            assert isinstance(data["id"], str) and isinstance(data["name"], str)
            calls[data["index"]] = {"id": data["id"], "type": "function", "function": {
                "name": data["name"], "arguments": data["arguments"]}}
        else:
            assert data["id"] is None and data["name"] is None and data["arguments"]
            calls[data["index"]]["function"]["arguments"] += data["arguments"]
    return list(calls.values())


def test_a_client_tools_conversation_calls_then_answers_in_text(tools_rill, simulator):
    model, tag = sim_model(tools="openai", calls=2, pre=3, tokens=12, itl_ms=2)
    body = {"messages": [USER], "model": model, "tools": TOOLS, "tool_choice": "auto"}
    events = read(tools_rill.chat(body))
    assert [e.id for e in events] == [str(i) for i in range(len(events))]
    assert [e.event for e in events][:2] == ["start", "delta"]
    assert text_of(events) == expected_text(3)
    calls = calls_of(events)
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        ("get_weather", tool_call_arguments(0)), ("get_time", tool_call_arguments(1))]
    assert events[-1].event == "done" and events[-1].json["finish_reason"] == "tool_calls"
    (first,) = simulator.requests(tag)
    assert (first["body"]["tools"], first["body"]["tool_choice"]) == (TOOLS, "auto")

    results = [{"role": "tool", "tool_call_id": c["id"], "content": f"result {i}"}
               for i, c in enumerate(calls)]
    history = [USER, {"role": "assistant", "content": text_of(events), "tool_calls": calls},
               *results]
    answer = read(tools_rill.chat({"messages": history, "model": model, "tools": TOOLS}))
    assert text_of(answer) == expected_text(12)  # byte-exact
    assert [e.event for e in answer if e.event not in ("delta",)] == ["start", "done"]
    assert answer[-1].json["finish_reason"] == "stop"
    follow_up = simulator.requests(tag)[1]["body"]
    assert follow_up["messages"] == history


@pytest.mark.parametrize("shape", TOOL_SHAPES)
def test_each_upstreams_tool_call_shape_becomes_the_same_events(tools_rill, shape) -> None:
    model, _ = sim_model(tools=shape, calls=2, itl_ms=1)
    events = read(tools_rill.chat({"messages": [USER], "model": model, "tools": TOOLS}))
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls_of(events)] == [
        ("get_weather", tool_call_arguments(0)), ("get_time", tool_call_arguments(1))]
    assert {e.event for e in events[1:-1]} == {"tool_call"}
    assert events[-1].event == "done"
    assert events[-1].json["finish_reason"] == "tool_calls"  # Gemini's "stop" included


def take(response: requests.Response, count: int) -> list[Event]:
    """Read ``count`` tool_call events, then drop the connection."""
    seen: list[Event] = []
    with response:
        assert response.status_code == 200, response.text
        for item in parse(response.iter_content(chunk_size=None)):
            if isinstance(item, Event):
                seen.append(item)
                if sum(e.event == "tool_call" for e in seen) >= count:
                    break
    return seen


@contextlib.contextmanager
def two_instances(request, simulator, backend: str) -> Iterator[tuple[RillServer, RillServer]]:
    """The module's server twice (memory), or two sharing one redis-server."""
    if backend == "memory":
        server = request.getfixturevalue("tools_rill")
        yield server, server
        return
    env = relay_env(simulator, RILL_CLIENT_TOOLS="true", RILL_ORPHAN_GRACE_SECONDS="30",
                    RILL_REDIS_URL=request.getfixturevalue("redis_server").url)
    with run_rill(env, "client-tools-a") as a, run_rill(env, "client-tools-b") as b:
        yield a, b


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_resume_mid_way_through_tool_calls_replays_them_exactly(request, simulator,
                                                                   backend) -> None:
    with two_instances(request, simulator, backend) as (a, b):
        resume_mid_way(a, b)


def resume_mid_way(a: RillServer, b: RillServer) -> None:
    model, _ = sim_model(tools="parallel", calls=3, itl_ms=40)
    first = take(a.chat({"messages": [USER], "model": model, "tools": TOOLS}), 4)
    stream_id = first[0].json["stream_id"]
    response = requests.get(f"{b.url}/api/chat/{stream_id}/events",
                            headers={"Last-Event-ID": first[-1].id}, stream=True, timeout=30)
    rest = read(response)
    assert rest[0].event == "tool_call", "the cut was mid-way through the calls"
    events = first + rest
    assert [e.id for e in events] == [str(i) for i in range(len(events))]
    assert len(calls_of(events)) == 3
    assert events[-1].json["finish_reason"] == "tool_calls"
    again = events_only(parse([requests.get(f"{a.url}/api/chat/{stream_id}/events",
                                            timeout=30).content]))
    assert [(e.id, e.event, e.data) for e in again] == [
        (e.id, e.event, e.data) for e in events]


@pytest.mark.parametrize(("extra", "param"), [
    ({"tools": TOOLS}, "tools"), ({"tool_choice": "none"}, "tool_choice"),
    ({"messages": [USER, {"role": "tool", "tool_call_id": "c", "content": "x"}]},
     "messages[1].role")])
def test_with_client_tools_off_a_tools_request_is_a_400_before_any_upstream_request(
        rill, simulator, extra, param) -> None:
    model, tag = sim_model(tools="openai")
    response = rill.chat({"messages": [USER], "model": model, **extra})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("client_tools_disabled", param)
    assert simulator.requests(tag) == []


@pytest.mark.parametrize(("extra", "code", "param", "words"), [
    ({"tools": [{"type": "function", "function": {"name": "get weather"}}]}, "invalid_tools",
     "tools[0].function.name", "letters, digits"),
    ({"tools": [*TOOLS, TOOLS[0]]}, "invalid_tools", "tools[2].function.name",
     "Two tools are named 'get_weather'"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "book"}}},
     "invalid_tool_choice", "tool_choice", "not in `tools`"),
    ({"messages": [USER, {"role": "tool", "tool_call_id": "c1", "content": "x"}]},
     "invalid_messages", "messages[1].tool_call_id", "answers no tool call"),
    ({"messages": [USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {}}}]}]},
     "invalid_messages", "messages[1].tool_calls[0].function.arguments", "must be a string"),
])
def test_bad_tools_are_a_400_with_a_clear_message(tools_rill, simulator, extra, code, param,
                                                  words) -> None:
    model, tag = sim_model(tools="openai")
    response = tools_rill.chat({"messages": [USER], "model": model, **extra})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert words in error["message"]
    assert simulator.requests(tag) == []
