"""Validation of POST /api/chat bodies: each failure is a 4xx with a JSON error naming it."""

from __future__ import annotations

import io

import pytest

from rill.chat_request import ChatRequest, validate
from rill.config import DEFAULTS
from rill.errors import InvalidRequest

USER = {"role": "user", "content": "Hi"}


def test_valid_body_becomes_a_chat_request() -> None:
    body = {"messages": [{"role": "system", "content": "Be brief."}, USER],
            "model": "m", "max_tokens": 5, "temperature": 0}
    assert validate(body, {**DEFAULTS, "RILL_MODELS": ["m"]}) == ChatRequest(
        messages=body["messages"], model="m", max_tokens=5, temperature=0.0)


def test_max_tokens_defaults_to_the_cap() -> None:
    config = {**DEFAULTS, "RILL_MAX_TOKENS": 123}
    assert validate({"messages": [USER]}, config).max_tokens == 123


def test_only_the_default_model_unless_listed_and_a_star_allows_any() -> None:
    with pytest.raises(InvalidRequest, match="not offered here"):
        validate({"messages": [USER], "model": "other"}, DEFAULTS)
    config = {**DEFAULTS, "RILL_MODELS": ["*"]}
    assert validate({"messages": [USER], "model": "other"}, config).model == "other"
    assert validate({"messages": [USER]}, config).model == DEFAULTS["RILL_MODEL"]
    config = {**DEFAULTS, "RILL_MODELS": ["a", "*"]}
    assert validate({"messages": [USER]}, config).model == DEFAULTS["RILL_MODEL"]


def test_missing_model_uses_the_default_or_the_first_allowed() -> None:
    assert validate({"messages": [USER]}, DEFAULTS).model == DEFAULTS["RILL_MODEL"]
    config = {**DEFAULTS, "RILL_MODELS": ["a", "b"]}
    assert validate({"messages": [USER]}, config).model == "a"


LONG = "x" * (DEFAULTS["RILL_MAX_MESSAGE_CHARS"] + 1)


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ([], "invalid_json", None),
        ({}, "invalid_messages", "messages"),
        ({"messages": []}, "invalid_messages", "messages"),
        ({"messages": "hi"}, "invalid_messages", "messages"),
        ({"messages": [USER] * (DEFAULTS["RILL_MAX_MESSAGES"] + 1)}, "invalid_messages",
         "messages"),
        ({"messages": ["hi"]}, "invalid_messages", "messages[0]"),
        ({"messages": [USER, {"role": "tool", "content": "x"}]}, "client_tools_disabled",
         "messages[1].role"),
        ({"messages": [USER, {"role": "function", "content": "x"}]}, "invalid_messages",
         "messages[1].role"),
        ({"messages": [{"role": {"a": 1}, "content": "x"}]}, "invalid_messages",
         "messages[0].role"),  # unhashable: was a TypeError, so a 500
        ({"messages": [{"role": "user"}]}, "invalid_messages", "messages[0].content"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "invalid_messages",
         "messages[0].content"),
        ({"messages": [{"role": "user", "content": LONG}]}, "invalid_messages",
         "messages[0].content"),
        ({"messages": [{"role": "user", "content": LONG[:-2]}] * 5}, "invalid_messages",
         "messages"),
        ({"messages": [USER], "model": ""}, "invalid_model", "model"),
        ({"messages": [USER], "model": 3}, "invalid_model", "model"),
        ({"messages": [USER], "max_tokens": 0}, "invalid_max_tokens", "max_tokens"),
        ({"messages": [USER], "max_tokens": True}, "invalid_max_tokens", "max_tokens"),
        ({"messages": [USER], "max_tokens": 1.5}, "invalid_max_tokens", "max_tokens"),
        ({"messages": [USER], "max_tokens": 10**9}, "invalid_max_tokens", "max_tokens"),
        ({"messages": [USER], "temperature": -0.1}, "invalid_temperature", "temperature"),
        ({"messages": [USER], "temperature": "hot"}, "invalid_temperature", "temperature"),
        ({"messages": [USER], "stream": False}, "unknown_field", "stream"),
    ],
)
def test_invalid_body_is_a_400_naming_the_field(client, body, code, param) -> None:
    response = client.post("/api/chat", json=body)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == code
    assert error.get("param") == param
    assert error["message"]


def test_model_outside_the_allow_list_is_refused() -> None:
    config = {**DEFAULTS, "RILL_MODELS": ["a"]}
    with pytest.raises(Exception, match="not offered here") as info:
        validate({"messages": [USER], "model": "b"}, config)
    assert info.value.code == "invalid_model"  # type: ignore[attr-defined]


def test_invalid_json_is_a_400(client) -> None:
    response = client.post("/api/chat", data=b'{"messages": [', content_type="application/json")
    assert response.status_code == 400
    assert response.json == {"error": {"code": "invalid_json",
                                       "message": "The request body is not valid JSON."}}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_body_that_is_not_json_is_a_415(client, content_type) -> None:
    response = client.post("/api/chat", data=b'{"messages": []}', content_type=content_type)
    assert response.status_code == 415
    assert response.json["error"]["code"] == "unsupported_media_type"


@pytest.mark.parametrize("config", [{"RILL_MAX_BODY_BYTES": 64}])
def test_body_over_the_limit_is_a_413(client) -> None:
    body = {"messages": [{"role": "user", "content": "x" * 100}]}
    response = client.post("/api/chat", json=body)
    assert response.status_code == 413
    assert response.json["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("config", [{"RILL_MAX_BODY_BYTES": 64}])
def test_chunked_body_over_the_limit_is_a_413(client) -> None:
    """A body without Content-Length is read only up to the limit."""

    body = io.BytesIO(b'{"messages": [{"role": "user", "content": "' + b"x" * 1000 + b'"}]}')
    response = client.post("/api/chat", input_stream=body, content_type="application/json",
                           environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413


def test_last_event_id_is_at_most_18_ascii_digits() -> None:
    from rill.chat_request import last_event_id

    assert last_event_id(None) == last_event_id("") == -1
    assert last_event_id("0") == 0 and last_event_id("9" * 18) == 10**18 - 1
    for raw in ("1" + "0" * 18, str(2**63), str(2**64), "-1", "+1", "1_0", " 1", "1e3",
                "\u0661", "x", "5\n"):
        with pytest.raises(InvalidRequest) as info:
            last_event_id(raw)
        assert info.value.code == "invalid_last_event_id", raw
