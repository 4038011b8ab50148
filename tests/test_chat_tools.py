"""Client tools in POST /api/chat bodies (RILL_CLIENT_TOOLS): what is accepted, what is
refused with which code and param."""

from __future__ import annotations

import copy

import pytest

from rill.chat_request import ChatRequest, validate
from rill.config import DEFAULTS
from rill.errors import InvalidRequest

ON = {**DEFAULTS, "RILL_CLIENT_TOOLS": True}
USER = {"role": "user", "content": "Weather in Paris?"}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}
CALL = {"id": "call_abc123", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'}}
ASSISTANT = {"role": "assistant", "content": None, "tool_calls": [CALL]}
RESULT = {"role": "tool", "tool_call_id": "call_abc123", "content": "18 C, sunny"}


def test_a_tools_conversation_becomes_a_chat_request_as_openai_has_it() -> None:
    body = {"messages": [USER, ASSISTANT, RESULT], "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    assert validate(copy.deepcopy(body), ON) == ChatRequest(
        messages=[USER, ASSISTANT, RESULT], model=DEFAULTS["RILL_MODEL"],
        max_tokens=DEFAULTS["RILL_MAX_TOKENS"], tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}})


def test_type_may_be_left_out_of_a_call_and_content_may_be_text_beside_it() -> None:
    call = {"id": "c1", "function": {"name": "f", "arguments": "{}"}}
    body = {"messages": [USER, {"role": "assistant", "content": "Looking.",
                                "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": "c1", "content": ""}]}
    request = validate(body, ON)
    assert request.messages[1] == {"role": "assistant", "content": "Looking.", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    assert request.tools is None and request.tool_choice is None


def test_null_tool_fields_are_absent() -> None:
    """Clients that serialize every field send ``"tool_calls": null`` on plain messages."""
    body: dict = {"messages": [USER, {"role": "assistant", "content": "Hi", "tool_calls": None},
                               USER]}
    for config, extra in ((DEFAULTS, {}), (ON, {"tools": None, "tool_choice": None})):
        request = validate(copy.deepcopy({**body, **extra}), config)
        assert request.messages[1] == {"role": "assistant", "content": "Hi"}
        assert (request.tools, request.tool_choice) == (None, None)


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
def test_tool_choice_words(choice: str) -> None:
    assert validate({"messages": [USER], "tools": [WEATHER], "tool_choice": choice},
                    ON).tool_choice == choice


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [USER], "tools": [WEATHER]}, "tools"),
    ({"messages": [USER], "tool_choice": "auto"}, "tool_choice"),
    ({"messages": [USER, ASSISTANT, RESULT]}, "messages[1].tool_calls"),
    ({"messages": [USER, {"role": "tool", "content": "x"}]}, "messages[1].role"),
])
def test_with_client_tools_off_any_tool_field_is_refused_with_its_own_code(
        client, body, param) -> None:
    response = client.post("/api/chat", json=body)
    assert response.status_code == 400
    error = response.json["error"]
    assert (error["code"], error["param"]) == ("client_tools_disabled", param)
    assert "Tool calling is not enabled" in error["message"]


def named(name: object) -> dict:
    return {"type": "function", "function": {"name": name}}


def tools_of(n: int) -> list[dict]:
    return [named(f"t{i}") for i in range(n)]


@pytest.mark.parametrize(("body", "code", "param", "words"), [
    ({"tools": []}, "invalid_tools", "tools", "1 to 32 tools"),
    ({"tools": tools_of(33)}, "invalid_tools", "tools", "1 to 32 tools"),
    ({"tools": {"a": 1}}, "invalid_tools", "tools", "must be a list"),
    ({"tools": ["get_weather"]}, "invalid_tools", "tools[0]", '"type": "function"'),
    ({"tools": [{"type": "code_interpreter"}]}, "invalid_tools", "tools[0]", "function"),
    ({"tools": [{**WEATHER, "extra": 1}]}, "invalid_tools", "tools[0]", "function"),
    ({"tools": [{"type": "function"}]}, "invalid_tools", "tools[0].function", "object"),
    ({"tools": [named("get weather")]}, "invalid_tools", "tools[0].function.name", "1 to 64"),
    ({"tools": [named("x" * 65)]}, "invalid_tools", "tools[0].function.name", "1 to 64"),
    ({"tools": [named("")]}, "invalid_tools", "tools[0].function.name", "1 to 64"),
    ({"tools": [named("wetter_\u00e4")]}, "invalid_tools", "tools[0].function.name",
     "letters"),
    ({"tools": [named(None)]}, "invalid_tools", "tools[0].function.name", "1 to 64"),
    ({"tools": [named("a"), named("b"), named("a")]}, "invalid_tools",
     "tools[2].function.name", "Two tools are named 'a'"),
    ({"tools": [{"type": "function", "function": {"name": "a", "params": {}}}]},
     "invalid_tools", "tools[0].function", "Unknown field 'params'"),
    ({"tools": [{"type": "function", "function": {"name": "a", "parameters": []}}]},
     "invalid_tools", "tools[0].function.parameters", "JSON Schema object"),
    ({"tools": [{"type": "function", "function": {"name": "a",
                                                  "parameters": {"type": "string"}}}]},
     "invalid_tools", "tools[0].function.parameters", "JSON Schema object"),
    ({"tools": [{"type": "function", "function": {"name": "a", "description": 5}}]},
     "invalid_tools", "tools[0].function.description", "string"),
    ({"tools": [{"type": "function", "function": {"name": "a", "strict": "yes"}}]},
     "invalid_tools", "tools[0].function.strict", "true or false"),
    ({"tools": [{"type": "function", "function": {
        "name": "a", "parameters": {"type": "object", "description": "x" * 16_400}}}]},
     "invalid_tools", "tools[0].function", "larger than 16384 bytes"),
    ({"tool_choice": "auto"}, "invalid_tool_choice", "tool_choice", "needs `tools`"),
    ({"tools": [WEATHER], "tool_choice": "always"}, "invalid_tool_choice", "tool_choice",
     '"auto", "none", "required"'),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "other"}}},
     "invalid_tool_choice", "tool_choice", "'other', which is not in `tools`"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}},
     "invalid_tool_choice", "tool_choice", '{"type": "function"'),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": 3}}},
     "invalid_tool_choice", "tool_choice", '{"type": "function"'),
])
def test_bad_tools_are_refused_naming_the_field(body, code, param, words) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate({"messages": [USER], **body}, ON)
    assert (info.value.code, info.value.param) == (code, param)
    assert words in info.value.message


def with_call(**changes: object) -> dict:
    return {**CALL, **changes}


@pytest.mark.parametrize(("messages", "param", "words"), [
    ([USER, {"role": "assistant", "content": None}], "messages[1].content", "string"),
    ([USER, {**ASSISTANT, "tool_calls": []}], "messages[1].tool_calls", "1 to 64"),
    ([{**USER, "tool_calls": [CALL]}], "messages[0].tool_calls", "Only an assistant"),
    ([USER, {**ASSISTANT, "tool_calls": "call"}], "messages[1].tool_calls", "1 to 64"),
    ([USER, {**ASSISTANT, "tool_calls": ["call"]}], "messages[1].tool_calls[0]", '"id"'),
    ([USER, {**ASSISTANT, "tool_calls": [with_call(type="custom")]}],
     "messages[1].tool_calls[0]", '"type": "function"'),
    ([USER, {**ASSISTANT, "tool_calls": [with_call(id="")]}],
     "messages[1].tool_calls[0].id", "printable ASCII"),
    ([USER, {**ASSISTANT, "tool_calls": [with_call(id="call 1")]}],
     "messages[1].tool_calls[0].id", "without spaces"),
    ([USER, {**ASSISTANT, "tool_calls": [with_call(id="c" * 257)]}],
     "messages[1].tool_calls[0].id", "1 to 256"),
    ([USER, {**ASSISTANT, "tool_calls": [with_call(id=7)]}],
     "messages[1].tool_calls[0].id", "tool call id"),
    ([USER, {**ASSISTANT, "tool_calls": [CALL, CALL]}, RESULT],
     "messages[1].tool_calls[1].id", "repeats"),
    ([USER, {**ASSISTANT, "tool_calls": [with_call(function={"name": "f", "arguments": {}})]}],
     "messages[1].tool_calls[0].function.arguments", "must be a string"),
    ([USER, {**ASSISTANT, "tool_calls": [with_call(function={"name": "f"})]}],
     "messages[1].tool_calls[0].function.arguments", "must be a string"),
    ([USER, {**ASSISTANT, "tool_calls": [with_call(function={"name": "a b",
                                                             "arguments": "{}"})]}],
     "messages[1].tool_calls[0].function.name", "1 to 64"),
    ([USER, {**ASSISTANT, "tool_calls": [with_call(function={
        "name": "f", "arguments": "x" * (DEFAULTS["RILL_MAX_MESSAGE_CHARS"] + 1)})]}, RESULT],
     "messages[1].content", "with its tool call arguments"),
    ([USER, {**RESULT, "tool_call_id": None}], "messages[1].tool_call_id", "tool call id"),
    ([USER, RESULT], "messages[1].tool_call_id", "answers no tool call"),
    ([USER, ASSISTANT, {**RESULT, "tool_call_id": "call_other"}], "messages[2].tool_call_id",
     "answers no tool call"),
    ([USER, ASSISTANT, RESULT, RESULT], "messages[3].tool_call_id", "answers no tool call"),
    ([USER, ASSISTANT, RESULT, USER, RESULT], "messages[4].tool_call_id",
     "answers no tool call"),
    ([USER, ASSISTANT], "messages", "'call_abc123' has no `tool` message"),
    ([USER, ASSISTANT, USER], "messages[2]", "'call_abc123' has no `tool` message"),
    ([USER, {**ASSISTANT, "tool_calls": [CALL, with_call(id="call_2")]}, RESULT, USER],
     "messages[3]", "'call_2' has no `tool` message"),
    ([USER, ASSISTANT, {**RESULT, "content": None}], "messages[2].content", "string"),
])
def test_bad_tool_messages_are_refused_naming_the_field(messages, param, words) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate({"messages": messages}, ON)
    assert (info.value.code, info.value.param) == ("invalid_messages", param)
    assert words in info.value.message


def test_tool_call_arguments_count_towards_the_total_characters() -> None:
    config = {**ON, "RILL_MAX_TOTAL_CHARS": 100}
    call = with_call(function={"name": "f", "arguments": "x" * 95})
    messages = [USER, {**ASSISTANT, "tool_calls": [call]}, RESULT]
    with pytest.raises(InvalidRequest, match="together are longer than 100"):
        validate({"messages": messages}, config)


def test_the_tool_limits_are_settings() -> None:
    config = {**ON, "RILL_MAX_TOOLS": 2, "RILL_MAX_TOOL_SCHEMA_BYTES": 40,
              "RILL_MAX_TOOL_CALLS": 1}
    with pytest.raises(InvalidRequest, match="1 to 2 tools"):
        validate({"messages": [USER], "tools": tools_of(3)}, config)
    with pytest.raises(InvalidRequest, match="larger than 40 bytes"):
        validate({"messages": [USER], "tools": [WEATHER]}, config)
    two = {**ASSISTANT, "tool_calls": [CALL, with_call(id="call_2")]}
    with pytest.raises(InvalidRequest, match="1 to 1 tool calls"):
        validate({"messages": [USER, two]}, config)
    assert validate({"messages": [USER], "tools": tools_of(2)}, config).tools == tools_of(2)


@pytest.mark.parametrize("config", [{"RILL_CLIENT_TOOLS": True}])
def test_the_demo_answers_a_tools_follow_up_whose_assistant_content_is_null(client) -> None:
    """The demo counted prompt words with ``content.split()``: a null content was a 500."""
    body = {"messages": [USER, ASSISTANT, RESULT], "tools": [WEATHER]}
    response = client.post("/api/chat", json=body)
    assert response.status_code == 200
    assert b"event: done" in response.get_data()
