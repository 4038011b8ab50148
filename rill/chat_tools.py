"""Tool calling in a ``POST /api/chat`` body, as OpenAI's chat completions request has it
(OpenAI API reference, "Chat completions: create": ``tools``, ``tool_choice``, messages of
role ``tool``, assistant messages with ``tool_calls``).

Accepted only when ``RILL_CLIENT_TOOLS`` is on; otherwise any of them is refused with
:class:`~rill.errors.ClientToolsDisabled` (400 ``client_tools_disabled``). Each other failure
raises :class:`~rill.errors.InvalidRequest`: ``invalid_tools``, ``invalid_tool_choice``, or
``invalid_messages`` for a tool message or an assistant's ``tool_calls``, with ``param``
pointing into the body (``tools[1].function.name``, ``messages[3].tool_call_id``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from .errors import ClientToolsDisabled, InvalidRequest

TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}", re.ASCII)  # OpenAI's rule for function names
# A tool call's id: 1 to 256 printable ASCII characters, no spaces. Providers make their own
# (OpenAI ``call_…``, vLLM ``chatcmpl-tool-…``, Gemini ``function-call-…``, Mistral 9
# letters); the client sends it back as ``tool_call_id``.
TOOL_CALL_ID = re.compile(r"[\x21-\x7e]{1,256}", re.ASCII)
TOOL_CHOICES = ("auto", "none", "required")
_FUNCTION_KEYS = frozenset({"name", "description", "parameters", "strict"})


def refuse_unless_enabled(body: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Raise :class:`ClientToolsDisabled` if ``body`` uses tools and ``RILL_CLIENT_TOOLS``
    is off: a ``tools`` or ``tool_choice`` field, a ``tool`` message, or a message's
    ``tool_calls`` (``param`` names the first). A message's null ``tool_calls`` is absent,
    as clients that serialize every field send it."""
    if config["RILL_CLIENT_TOOLS"]:
        return
    for field in ("tools", "tool_choice"):
        if field in body:
            raise ClientToolsDisabled(param=field)
    messages = body.get("messages")
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        if isinstance(message, dict):
            if message.get("role") == "tool":
                raise ClientToolsDisabled(param=f"messages[{i}].role")
            if message.get("tool_calls") is not None:
                raise ClientToolsDisabled(param=f"messages[{i}].tool_calls")


def tools(value: Any, config: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The request's ``tools``: 1 to ``RILL_MAX_TOOLS`` function tools
    ``{"type": "function", "function": {"name", "description"?, "parameters"?, "strict"?}}``
    with distinct names (``TOOL_NAME``), ``parameters`` a JSON Schema object, and each
    ``function`` at most ``RILL_MAX_TOOL_SCHEMA_BYTES`` as compact JSON. ``None`` if absent."""
    if value is None:
        return None
    most, size = config["RILL_MAX_TOOLS"], config["RILL_MAX_TOOL_SCHEMA_BYTES"]
    if not isinstance(value, list) or not 1 <= len(value) <= most:
        raise _bad_tools(f"`tools` must be a list of 1 to {most} tools.")
    names: set[str] = set()
    kept = []
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function" or set(tool) - {
                "type", "function"}:
            raise _bad_tools(f'`{where}` must be {{"type": "function", "function": {{…}}}}.',
                             where)
        function = tool.get("function")
        if not isinstance(function, dict):
            raise _bad_tools(f"`{where}.function` must be an object.", f"{where}.function")
        if unknown := sorted(set(function) - _FUNCTION_KEYS):
            raise _bad_tools(f"Unknown field {unknown[0]!r:.40} in `{where}.function`; allowed: "
                             f"{', '.join(sorted(_FUNCTION_KEYS))}.", f"{where}.function")
        name = _name(function.get("name"), f"{where}.function.name", _bad_tools)
        if name in names:
            raise _bad_tools(f"Two tools are named {name!r}; tool names must differ.",
                             f"{where}.function.name")
        names.add(name)
        _function_fields(function, where)
        if len(orjson.dumps(function)) > size:
            raise _bad_tools(f"`{where}.function` is larger than {size} bytes as JSON.",
                             f"{where}.function")
        kept.append({"type": "function", "function": dict(function)})
    return kept


def _function_fields(function: dict[str, Any], where: str) -> None:
    description, parameters = function.get("description"), function.get("parameters")
    if description is not None and not isinstance(description, str):
        raise _bad_tools(f"`{where}.function.description` must be a string.",
                         f"{where}.function.description")
    if parameters is not None and (not isinstance(parameters, dict)
                                   or parameters.get("type", "object") != "object"):
        raise _bad_tools(f"`{where}.function.parameters` must be a JSON Schema object "
                         '(`"type": "object"`).', f"{where}.function.parameters")
    strict = function.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise _bad_tools(f"`{where}.function.strict` must be true or false.",
                         f"{where}.function.strict")


def tool_choice(value: Any, offered: list[dict[str, Any]] | None) -> str | dict[str, Any] | None:
    """The request's ``tool_choice``: ``auto``, ``none``, ``required``, or
    ``{"type": "function", "function": {"name"}}`` naming an offered tool; only with
    ``tools``. ``None`` if absent."""
    if value is None:
        return None
    if offered is None:
        raise _bad_choice("`tool_choice` needs `tools`.")
    if isinstance(value, str) and value in TOOL_CHOICES:
        return value
    function = value.get("function") if isinstance(value, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not (isinstance(value, dict) and value.get("type") == "function" and len(value) == 2
            and isinstance(function, dict) and len(function) == 1 and isinstance(name, str)):
        raise _bad_choice('`tool_choice` must be "auto", "none", "required" or '
                          '{"type": "function", "function": {"name": …}}.')
    if name not in {tool["function"]["name"] for tool in offered}:
        raise _bad_choice(f"`tool_choice` names {name[:64]!r}, which is not in `tools`.")
    return {"type": "function", "function": {"name": name}}


def tool_calls(value: Any, where: str, most: int) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls``: 1 to ``most`` (``RILL_MAX_TOOL_CALLS``) calls
    ``{"id", "type": "function", "function": {"name", "arguments"}}``, ``arguments`` a
    string (JSON, as the model wrote it: not parsed), ids distinct."""
    if not isinstance(value, list) or not 1 <= len(value) <= most:
        raise _bad_message(f"`{where}` must be a list of 1 to {most} tool calls.", where)
    calls, ids = [], set()
    for j, call in enumerate(value):
        at = f"{where}[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or call.get("type", "function") != "function" or (
                not isinstance(function, dict)):
            raise _bad_message(f'`{at}` must be {{"id", "type": "function", "function": '
                               '{"name", "arguments"}}.', at)
        call_id = call_id_of(call.get("id"), f"{at}.id")
        if call_id in ids:
            raise _bad_message(f"`{at}.id` repeats an id of the same message.", f"{at}.id")
        ids.add(call_id)
        name = _name(function.get("name"), f"{at}.function.name", _bad_message)
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            raise _bad_message(f"`{at}.function.arguments` must be a string (JSON text).",
                               f"{at}.function.arguments")
        calls.append({"id": call_id, "type": "function",
                      "function": {"name": name, "arguments": arguments}})
    return calls


def call_id_of(value: Any, where: str) -> str:
    """``value`` as a tool call id (``TOOL_CALL_ID``), else ``invalid_messages``."""
    if not isinstance(value, str) or not TOOL_CALL_ID.fullmatch(value):
        raise _bad_message(f"`{where}` must be a tool call id: 1 to 256 printable ASCII "
                           "characters without spaces.", where)
    return value


def check_answers(messages: list[dict[str, Any]]) -> None:
    """Check that each ``tool`` message answers a call of the assistant message just before
    the run of tool messages it is in, once, and that every such call is answered there
    (as OpenAI requires). Raises ``invalid_messages``."""
    pending: set[str] | None = None  # the calls still unanswered after an assistant's calls
    for i, message in enumerate([*messages, {"role": "end"}]):
        where = f"messages[{i}]"
        if message["role"] == "tool":
            call_id = message["tool_call_id"]
            if pending is None or call_id not in pending:
                raise _bad_message(f"`{where}` answers no tool call of the assistant message "
                                   "before it (or answers one twice).", f"{where}.tool_call_id")
            pending.discard(call_id)
            continue
        if pending:
            raise _bad_message(f"Tool call {sorted(pending)[0][:64]!r} has no `tool` message "
                               "answering it right after its assistant message.",
                               "messages" if message["role"] == "end" else where)
        calls = message.get("tool_calls")
        pending = {call["id"] for call in calls} if calls else None


def _name(value: Any, where: str, bad: Any) -> str:
    if not isinstance(value, str) or not TOOL_NAME.fullmatch(value):
        raise bad(f"`{where}` must be 1 to 64 letters, digits, `_` or `-`.", where)
    return value


def _bad_tools(message: str, param: str = "tools") -> InvalidRequest:
    return InvalidRequest(message, code="invalid_tools", param=param)


def _bad_choice(message: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_tool_choice", param="tool_choice")


def _bad_message(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_messages", param=param)
