"""Tool calls from OpenAI-compatible upstreams, in-process: each server's shape (cassettes in
``tests/cassettes/*_tools.sse``) becomes the same ``tool_call`` events."""

from __future__ import annotations

import orjson
import pytest

from rill.chat_request import ChatRequest
from rill.upstreams.chunks import ChunkParser
from tests.test_openai_upstream import cassette, sse, upstream

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "get_time"}}]
REQUEST = ChatRequest(messages=[{"role": "user", "content": "Weather and time?"}], model="m",
                      max_tokens=50, tools=TOOLS, tool_choice="auto")
PARIS = '{"location":"Paris","unit":"c"}'
TOKYO = '{"location":"Tokyo"}'
WEATHER_AND_TIME = [("call_Rq3XzGk1VbN8aJ2mE5tYhW0p", "get_weather", PARIS),
                    ("call_7hTn2LdQ9sKc4Fw1ZpXe3uVy", "get_time", TOKYO)]


def calls_of(events: list) -> list[tuple[str, str, str]]:
    """Join the ``tool_call`` events into calls, checking the event contract on the way."""
    calls: dict[int, list] = {}
    for kind, payload in events:
        if kind != "tool_call":
            continue
        assert set(payload) == {"index", "id", "name", "arguments"}
        assert type(payload["arguments"]) is str
        index = payload["index"]
        if index not in calls:
            assert index == len(calls), "indexes count from 0 in order of appearance"
            assert type(payload["id"]) is str and type(payload["name"]) is str
            calls[index] = [payload["id"], payload["name"], payload["arguments"]]
        else:
            assert payload["id"] is None and payload["name"] is None
            assert payload["arguments"], "no empty fragments after the first"
            calls[index][2] += payload["arguments"]
    return [tuple(call) for call in calls.values()]  # type: ignore[misc]


def run_tools(name: str) -> list:
    stream = upstream(lambda _: sse(cassette(name))).open(REQUEST)
    try:
        return list(stream)
    finally:
        stream.close()


@pytest.mark.parametrize(("name", "expected", "usage"), [
    ("openai_tools.sse", WEATHER_AND_TIME, 120),
    ("vllm_tools.sse", [("chatcmpl-tool-8e1f0c2a7b3d4e5f9a6b1c2d3e4f5a6b", "get_weather",
                         '{"location": "Paris", "unit": "c"}')], 120),
    ("llamacpp_tools.sse", [("Kx9mP2qR7sT4vW1yZ3bC5dF8gH0jL6nM", "get_weather", PARIS)], 120),
    ("litellm_tools.sse", WEATHER_AND_TIME, 120),
    ("gemini_tools.sse", [("function-call-15462845914418932145", "get_weather", PARIS),
                          ("function-call-4790185329210542763", "get_time", TOKYO)], 120),
    ("parallel_tools.sse", [("call_A0", "get_weather", PARIS), ("call_B1", "get_time", TOKYO)],
     None),
])
def test_each_servers_tool_call_shape_becomes_the_same_tool_call_events(
        name, expected, usage) -> None:
    events = run_tools(name)
    assert calls_of(events) == expected
    assert {kind for kind, _ in events[:-1]} == {"tool_call"}
    kind, done = events[-1]
    assert (kind, done["finish_reason"]) == ("done", "tool_calls")  # Gemini's "stop" too
    assert (done["usage"] or {}).get("total_tokens") == usage


def test_openai_shape_events_are_the_fragments_as_they_came() -> None:
    events = run_tools("openai_tools.sse")
    assert events[:3] == [
        ("tool_call", {"index": 0, "id": "call_Rq3XzGk1VbN8aJ2mE5tYhW0p", "name": "get_weather",
                       "arguments": ""}),
        ("tool_call", {"index": 0, "id": None, "name": None, "arguments": '{"'}),
        ("tool_call", {"index": 0, "id": None, "name": None, "arguments": "location"})]


def test_the_request_carries_tools_and_tool_choice() -> None:
    seen = []

    def handler(request):
        seen.append(orjson.loads(request.content))
        return sse(cassette("openai_tools.sse"))

    stream = upstream(handler).open(REQUEST)
    list(stream)
    stream.close()
    assert seen[0]["tools"] == TOOLS and seen[0]["tool_choice"] == "auto"


def chunk(delta: dict | None = None, finish: str | None = None) -> bytes:
    return orjson.dumps({"choices": [{"index": 0, "delta": delta or {},
                                      "finish_reason": finish}]})


def fragment(**fields) -> bytes:
    return chunk({"tool_calls": [fields]})


HEAD = fragment(index=0, id="call_1", type="function",
                function={"name": "f", "arguments": ""})
TEXT = chunk({"content": "Let me check."})


def test_text_before_the_calls_is_kept_in_order() -> None:
    parser = ChunkParser(tools=True)
    events = parser.parse([TEXT, HEAD, fragment(index=0, function={"arguments": "{}"}),
                           chunk(finish="tool_calls"), b"[DONE]"])
    assert events == [
        ("delta", {"content": "Let me check."}),
        ("tool_call", {"index": 0, "id": "call_1", "name": "f", "arguments": ""}),
        ("tool_call", {"index": 0, "id": None, "name": None, "arguments": "{}"}),
        ("done", {"finish_reason": "tool_calls", "usage": None})]


@pytest.mark.parametrize(("finish", "reported"), [
    ("stop", "tool_calls"), (None, "tool_calls"), ("length", "length"),
    ("tool_calls", "tool_calls")])
def test_a_finish_after_calls_says_tool_calls_unless_the_answer_was_cut(
        finish, reported) -> None:
    parser = ChunkParser(tools=True)
    events = parser.parse([HEAD, chunk(finish=finish), b"[DONE]"])
    assert events[-1] == ("done", {"finish_reason": reported, "usage": None})


def test_a_call_without_an_id_gets_one_and_indexless_fragments_follow_ids() -> None:
    parser = ChunkParser(tools=True)
    events = parser.parse([
        fragment(index=0, function={"name": "f", "arguments": "{"}),  # vLLM without an id
        fragment(function={"name": "g", "arguments": "{"}),  # no index, no id, a name: new
        fragment(function={"arguments": "}"}),  # neither: the call before
        fragment(id="g2", function={"name": "g", "arguments": "[]"}),  # a new id: new
        fragment(id="call_rill_1", function={"arguments": "!"}),  # a known id: that call
        fragment(index=0, function={"arguments": "}"}), b"[DONE]"])
    assert calls_of(events) == [("call_rill_0", "f", "{}"), ("call_rill_1", "g", "{}!"),
                                ("g2", "g", "[]")]


@pytest.mark.parametrize("bad", [
    chunk({"tool_calls": {"index": 0}}), chunk({"tool_calls": ["call"]}),
    fragment(index=-1, id="c", function={"name": "f"}),
    fragment(index="0", id="c", function={"name": "f"}),
    fragment(index=True, id="c", function={"name": "f"}),
    fragment(index=0, id=5, function={"name": "f"}),
    fragment(index=0, id="c", function={"name": ["f"]}),
    fragment(index=0, id="c", function={"name": "f", "arguments": {"a": 1}}),
    fragment(index=0, id="c", function="f"),
    fragment(index=0, id="c", type="custom", function={"name": "f"}),
    fragment(index=0, id="c", function={"arguments": "{}"}),  # a new call without a name
    fragment(index=0, id="c" * 300, function={"name": "f"}),
    fragment(index=0, id="call 1", function={"name": "f"}),
    chunk(finish="tool_calls"),  # a tool_calls finish with no call
])
def test_a_malformed_tool_call_ends_the_parse_keeping_the_events_before_it(bad) -> None:
    parser = ChunkParser(tools=True)
    events = parser.parse([TEXT, chunk({"content": "b", "tool_calls": []}), bad, TEXT,
                           b"[DONE]"])
    assert events == [("delta", {"content": "Let me check."}), ("delta", {"content": "b"})]
    assert parser.error is not None and parser.error.code == "upstream_malformed"


def test_a_malformed_fragment_drops_its_whole_chunk() -> None:
    parser = ChunkParser(tools=True)
    bad = chunk({"content": "x", "tool_calls": [
        {"index": 0, "id": "c", "function": {"name": "f"}}, {"index": 1, "id": 5}]})
    assert parser.parse([TEXT, bad, b"[DONE]"]) == [("delta", {"content": "Let me check."})]
    assert parser.error is not None and parser.error.code == "upstream_malformed"


@pytest.mark.parametrize("legacy", [
    chunk({"function_call": {"name": "f", "arguments": "{}"}}),
    chunk(finish="function_call")])
def test_a_legacy_function_call_stays_unsupported_even_with_tools(legacy) -> None:
    parser = ChunkParser(tools=True)
    assert parser.parse([TEXT, legacy, b"[DONE]"]) == [("delta", {"content": "Let me check."})]
    assert parser.error is not None and parser.error.code == "upstream_unsupported"
