"""Validate a ``POST /api/chat`` body into a :class:`ChatRequest`.

The body follows OpenAI's chat completions request, narrowed to what Rill relays:
``{"messages": [{"role", "content"}, ...], "model"?, "max_tokens"?, "temperature"?}``.
Each failure raises :class:`~rill.errors.InvalidRequest` whose ``code`` names the field
(``invalid_messages``, ``invalid_model``, ...) and whose ``param`` points into the body
(``messages[2].role``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from . import chat_tools
from .errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

ROLES = frozenset({"system", "user", "assistant"})  # and "tool", with RILL_CLIENT_TOOLS
KNOWN_FIELDS = frozenset({"messages", "model", "max_tokens", "temperature", "tools",
                          "tool_choice"})
LAST_EVENT_ID = re.compile(r"[0-9]{0,18}", re.ASCII)  # as the OpenAPI document's pattern


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request: plain values, safe to hand to a greenlet.

    ``messages`` are ``{"role", "content"}``, plus ``tool_call_id`` (role ``tool``) or
    ``tool_calls`` (role ``assistant``, whose ``content`` may then be ``None``); ``tools``
    and ``tool_choice`` as OpenAI's request has them, ``None`` when not offered.
    ``first_call``: the ``index`` of the first ``tool_call`` event its answer gives (0; after
    server-side tool steps, the calls of the steps before, :mod:`rill.steps`).
    """

    messages: list[dict[str, Any]]
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    first_call: int = 0


def parse_body(raw: bytes, content_type: str | None, max_bytes: int) -> Any:
    """Decode a JSON request body of at most ``max_bytes`` bytes.

    Raises :class:`UnsupportedMediaType` (415) unless the type is ``application/json``,
    :class:`PayloadTooLarge` (413), or :class:`InvalidRequest` ``invalid_json`` (400).
    """
    mimetype = (content_type or "").split(";", 1)[0].strip().lower()
    if mimetype != "application/json":
        raise UnsupportedMediaType()
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes.")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The request body is not valid JSON.", code="invalid_json") from None


def validate(body: Any, config: Mapping[str, Any]) -> ChatRequest:
    """Check ``body`` against the limits in ``config`` and return a :class:`ChatRequest`."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise InvalidRequest(
            f"Unknown field {unknown[0]!r}; allowed: {', '.join(sorted(KNOWN_FIELDS))}.",
            code="unknown_field", param=unknown[0],
        )
    chat_tools.refuse_unless_enabled(body, config)
    tools = chat_tools.tools(body.get("tools"), config)
    return ChatRequest(
        messages=_messages(body.get("messages"), config),
        model=_model(body.get("model"), config),
        max_tokens=_max_tokens(body.get("max_tokens"), config["RILL_MAX_TOKENS"]),
        temperature=_temperature(body.get("temperature")),
        tools=tools,
        tool_choice=chat_tools.tool_choice(body.get("tool_choice"), tools),
    )


def _messages(value: Any, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    most = config["RILL_MAX_MESSAGES"]
    if not isinstance(value, list) or not 1 <= len(value) <= most:
        raise _bad("messages", f"`messages` must be a list of 1 to {most} messages.")
    roles = ROLES | {"tool"} if config["RILL_CLIENT_TOOLS"] else ROLES
    total = 0
    messages = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad("messages", f"`{where}` must be an object with `role` and `content`.",
                       where)
        role = message.get("role")
        if not isinstance(role, str) or role not in roles:  # a dict is unhashable
            raise _bad("messages", f"`{where}.role` must be one of: "
                       f"{', '.join(sorted(roles))}.", f"{where}.role")
        kept, chars = _message(message, role, where, config)
        total += chars
        messages.append(kept)
    if total > config["RILL_MAX_TOTAL_CHARS"]:
        raise _bad("messages", "The messages together are longer than "
                   f"{config['RILL_MAX_TOTAL_CHARS']} characters.")
    if config["RILL_CLIENT_TOOLS"]:
        chat_tools.check_answers(messages)
    return messages


def _message(message: dict[str, Any], role: str, where: str,
             config: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
    """One message as relayed, and its characters (content and tool call arguments)."""
    content, per_message = message.get("content"), config["RILL_MAX_MESSAGE_CHARS"]
    calls = None
    if message.get("tool_calls") is not None:  # only with client tools; null is absent
        if role != "assistant":
            raise _bad("messages", f"Only an assistant message may have `tool_calls`, not "
                       f"`{where}`.", f"{where}.tool_calls")
        calls = chat_tools.tool_calls(message["tool_calls"], f"{where}.tool_calls",
                                      config["RILL_MAX_TOOL_CALLS"])
    if not isinstance(content, str) and not (calls and content is None):
        raise _bad("messages", f"`{where}.content` must be a string"
                   f"{' (or null, with `tool_calls`)' if calls else ''}.", f"{where}.content")
    chars = len(content or "") + sum(len(c["function"]["arguments"]) for c in calls or ())
    if chars > per_message:
        raise _bad("messages", f"`{where}.content` is longer than {per_message} characters"
                   f"{' (with its tool call arguments)' if calls else ''}.",
                   f"{where}.content")
    kept: dict[str, Any] = {"role": role, "content": content}
    if calls:
        kept["tool_calls"] = calls
    if role == "tool":
        kept["tool_call_id"] = chat_tools.call_id_of(message.get("tool_call_id"),
                                                     f"{where}.tool_call_id")
    return kept, chars


def allowed_models(config: Mapping[str, Any]) -> list[str]:
    """The models a request may name: ``RILL_MODELS``, else ``RILL_MODEL`` alone (the
    operator's key pays for whatever is forwarded); a ``*`` in it allows any model."""
    return list(config["RILL_MODELS"]) or [str(config["RILL_MODEL"])]


def _model(value: Any, config: Mapping[str, Any]) -> str:
    allowed = allowed_models(config)
    any_model = "*" in allowed
    if value is None:
        default = str(config["RILL_MODEL"])
        named = [m for m in allowed if m != "*"]
        return default if any_model or default in allowed or not named else named[0]
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise _bad("model", "`model` must be a non-empty string of at most 256 characters.")
    if not any_model and value not in allowed:
        raise _bad("model", f"Model {value[:64]!r} is not offered here; choose one of: "
                   f"{', '.join(allowed)}.")
    return value


def _max_tokens(value: Any, most: int) -> int:
    """The client's ``max_tokens``, else ``most``: always sent, so it caps every answer."""
    if value is None:
        return most
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema's integer: 5.0 is one (as the OpenAPI document says)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
        raise _bad("max_tokens", f"`max_tokens` must be a whole number from 1 to {most}.")
    return value


def _temperature(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
        raise _bad("temperature", "`temperature` must be a number from 0 to 2.")
    return float(value)


def last_event_id(raw: str | None) -> int:
    """The event id a resume starts after: ``raw`` (a ``Last-Event-ID``, WHATWG HTML
    "server-sent events") as 1 to 18 ASCII digits (below 2**63, what both hubs can number:
    Redis stream ids are 64-bit); absent or empty is -1 (from the start).

    Raises :class:`InvalidRequest` ``invalid_last_event_id`` (400) for anything else.
    """
    if not raw:
        return -1
    if not LAST_EVENT_ID.fullmatch(raw):
        raise InvalidRequest("Last-Event-ID must be a whole number of at most 18 digits.",
                             code="invalid_last_event_id", param="Last-Event-ID")
    return int(raw)


def _bad(field_name: str, message: str, param: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, code=f"invalid_{field_name}", param=param or field_name)
