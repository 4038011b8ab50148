"""The OpenAPI document describes client tools when RILL_CLIENT_TOOLS is on (and only then),
and the ``tool_call`` event; checked with a JSON Schema 2020-12 validator (OpenAPI 3.2's
dialect) against bodies the validator accepts and refuses, and events the parser makes."""

from __future__ import annotations

import copy

import pytest
from jsonschema import Draft202012Validator

from rill.chat_request import validate
from rill.config import DEFAULTS
from rill.errors import InvalidRequest
from rill.openapi import EVENT_DATA, document
from rill.upstreams.chunks import ChunkParser
from tests.test_chat_tools import ASSISTANT, RESULT, USER, WEATHER

ON = {**DEFAULTS, "RILL_CLIENT_TOOLS": True, "RILL_MODELS": ["*"]}


def request_schema(config: dict) -> dict:
    post = document(config)["paths"]["/api/chat"]["post"]
    return post["requestBody"]["content"]["application/json"]["schema"]


def test_tools_are_described_only_when_client_tools_are_on() -> None:
    off = request_schema({**DEFAULTS})["properties"]
    assert "tools" not in off and "tool_choice" not in off
    on = request_schema({**ON, "RILL_MAX_TOOLS": 5, "RILL_MAX_TOOL_CALLS": 7})["properties"]
    assert on["tools"]["oneOf"][0]["maxItems"] == 5
    roles = [variant["properties"]["role"] for variant in on["messages"]["items"]["oneOf"]]
    assert roles == [{"enum": ["system", "user", "assistant"]}, {"const": "assistant"},
                     {"const": "tool"}]
    assert on["messages"]["items"]["oneOf"][1]["properties"]["tool_calls"]["maxItems"] == 7


GOOD = [
    {"messages": [USER], "tools": [WEATHER], "tool_choice": "required"},
    {"messages": [USER], "tools": [WEATHER],
     "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
    {"messages": [USER, ASSISTANT, RESULT]},
    {"messages": [USER, {**ASSISTANT, "content": "Looking."}, RESULT, USER]},
    {"messages": [{**USER, "tool_calls": None}], "tools": None, "tool_choice": None},
    {"messages": [USER], "model": None, "max_tokens": None, "temperature": None},
]
BAD = [
    {"messages": [USER], "tools": []},
    {"messages": [USER], "tools": [{"type": "function", "function": {"name": "a b"}}]},
    {"messages": [USER], "tools": [{"type": "function", "function": {
        "name": "a", "parameters": {"type": "array"}}}]},
    {"messages": [USER], "tools": [WEATHER], "tool_choice": "always"},
    {"messages": [USER, {**ASSISTANT, "tool_calls": []}]},
    {"messages": [USER, {"role": "assistant", "content": None}]},
    {"messages": [USER, {**RESULT, "tool_call_id": "has space"}]},
    {"messages": [USER, {"role": "tool", "content": "x"}]},
    {"messages": [{**USER, "tool_calls": ASSISTANT["tool_calls"]}]},
    {"messages": [USER], "max_tokens": 0},
    {"messages": [USER], "temperature": "hot"},
]


@pytest.mark.parametrize("body", GOOD)
def test_bodies_rill_accepts_are_valid_by_the_document(body) -> None:
    validate(copy.deepcopy(body), ON)
    Draft202012Validator(request_schema(ON)).validate(body)


@pytest.mark.parametrize("body", BAD)
def test_bodies_the_document_refuses_rill_refuses(body) -> None:
    schema = request_schema(ON)
    assert "tools" in schema["properties"]  # refused for what they hold, not as unknown
    assert not Draft202012Validator(schema).is_valid(body)
    with pytest.raises(InvalidRequest):
        validate(copy.deepcopy(body), ON)


def test_tool_call_events_are_valid_by_the_document_and_odd_ones_are_not() -> None:
    schema = Draft202012Validator(EVENT_DATA["tool_call"])
    head = b'{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}'
    more = b'{"index":0,"function":{"arguments":"{}"}}'
    events = ChunkParser(tools=True).parse([
        b'{"choices":[{"delta":{"tool_calls":[' + head + b"]}}]}",
        b'{"choices":[{"delta":{"tool_calls":[' + more + b"]}}]}", b"[DONE]"])
    assert [kind for kind, _ in events] == ["tool_call", "tool_call", "done"]
    for _, data in events[:2]:
        schema.validate(data)
    for odd in ({"index": 0, "id": None, "name": None, "arguments": ""},
                {"index": 0, "id": "c", "name": None, "arguments": "x"},
                {"index": -1, "id": "c", "name": "f", "arguments": ""},
                {"index": 0, "id": "c", "name": "f"}):
        assert not schema.is_valid(odd), odd


def test_tool_result_events_are_valid_by_the_document_and_odd_ones_are_not() -> None:
    """The ``tool_result`` event of a server-side tool step (issue 17, item 2), and the
    error that ends an answer past RILL_MAX_TOOL_STEPS."""
    from flask import Flask

    from rill.errors import ToolStepsExceeded
    from rill.tools import ToolCall, ToolRegistry, ToolResult

    schema = Draft202012Validator(EVENT_DATA["tool_result"])
    refused = ToolRegistry().start(ToolCall("call_1", "nope", "{}"), None, Flask(__name__))
    for result in (refused.wait(), ToolResult("c-2", "weather", True, "Sunny", 12.5)):
        schema.validate(result.to_dict())
    good = ToolResult("c", "f", True, "x", 0.0).to_dict()
    for odd in ({**good, "ok": "true"}, {**good, "elapsed_ms": -1}, {**good, "id": "a b"},
                {k: v for k, v in good.items() if k != "content"}, {**good, "extra": 1}):
        assert not schema.is_valid(odd), odd
    Draft202012Validator(EVENT_DATA["error"]).validate(ToolStepsExceeded().to_dict())
    stream = document(ON)["paths"]["/api/chat"]["post"]["responses"]["200"]
    assert "`tool_result`" in stream["description"]
