"""The OpenAPI 3.2 document of Rill's API, built from the live settings.

Served at ``GET /api/openapi.json``. A stream's body is ``text/event-stream`` described, as
OpenAPI 3.2 does, by an ``itemSchema`` for one event (WHATWG HTML, server-sent events: the
``event``, ``data`` and ``id`` fields), whose ``data`` is JSON (``contentMediaType``) with a
``contentSchema`` per event type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .chat_request import LAST_EVENT_ID, allowed_models
from .chat_tools import TOOL_CALL_ID, TOOL_CHOICES, TOOL_NAME

ERROR_CODES: dict[int, list[str]] = {
    400: ["invalid_json", "invalid_body", "unknown_field", "invalid_messages",
          "invalid_model", "invalid_max_tokens", "invalid_temperature",
          "invalid_last_event_id", "client_tools_disabled", "invalid_tools",
          "invalid_tool_choice"],
    401: ["unauthorized"],
    403: ["insufficient_scope", "cross_site_request", "csrf_failed"],
    404: ["stream_not_found", "not_found"],
    408: ["request_timeout"],
    410: ["events_expired"],
    413: ["body_too_large"],
    415: ["unsupported_media_type"],
    429: ["rate_limited", "too_many_streams", "too_many_subscribers",
          "upstream_rate_limited"],
    502: ["upstream_auth", "upstream_rejected", "upstream_error", "upstream_unavailable"],
    503: ["unavailable", "hub_unavailable"],
    504: ["upstream_timeout"],
}
STREAM_ERROR_CODES = ["upstream_error", "upstream_cut", "upstream_stalled",
                      "upstream_malformed", "upstream_unsupported", "timeout",
                      "tool_steps_exceeded",
                      "producer_lost", "shutdown", "hub_unavailable", "events_expired",
                      "internal"]

def _or_null(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "null"}]}


_TEXT = {"type": "object", "additionalProperties": False, "required": ["content"],
         "properties": {"content": {"type": "string", "minLength": 1}}}
_COUNT = {"type": ["integer", "null"], "minimum": 0}
EVENT_DATA: dict[str, dict[str, Any]] = {  # the JSON ``data`` of each event type
    "start": {"type": "object", "additionalProperties": False,
              "required": ["stream_id", "model"],
              "properties": {"stream_id": {"type": "string"}, "model": {"type": "string"}}},
    "delta": _TEXT,
    "reasoning": _TEXT,
    # A fragment of a tool call (client or server-side tools): the first of each call has
    # its id and name, later ones have them null and carry more of its JSON arguments.
    "tool_call": {"type": "object", "additionalProperties": False,
                  "required": ["index", "id", "name", "arguments"], "properties": {
                      "index": {"type": "integer", "minimum": 0},
                      "id": {"type": ["string", "null"]}, "name": {"type": ["string", "null"]},
                      "arguments": {"type": "string"}},
                  "oneOf": [{"properties": {"id": {"type": "string"},
                                            "name": {"type": "string"}}},
                            {"properties": {"id": {"type": "null"}, "name": {"type": "null"},
                                            "arguments": {"minLength": 1}}}]},
    # A server-side tool's result (rill.steps): one per call, in call order, after the calls.
    "tool_result": {"type": "object", "additionalProperties": False,
                    "required": ["id", "name", "ok", "content", "elapsed_ms"], "properties": {
                        "id": {"type": "string", "pattern": f"^{TOOL_CALL_ID.pattern}$"},
                        "name": {"type": "string"}, "ok": {"type": "boolean"},
                        "content": {"type": "string"},
                        "elapsed_ms": {"type": "number", "minimum": 0}}},
    "done": {"type": "object", "additionalProperties": False,
             "required": ["finish_reason", "usage"], "properties": {
                 "finish_reason": {"type": ["string", "null"]},
                 "usage": _or_null({
                     "type": "object", "additionalProperties": False,
                     "properties": {key: _COUNT for key in (
                         "prompt_tokens", "completion_tokens", "total_tokens")}})}},
    "error": {"type": "object", "additionalProperties": False,
              "required": ["code", "message"], "properties": {
                  "code": {"enum": STREAM_ERROR_CODES}, "message": {"type": "string"},
                  "retry_after": {"type": "integer", "minimum": 1}}},
}


def _event(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["event", "data"], "properties": {
        "event": {"const": kind},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": data},
        # Every event has an id but an error from the relay itself (the hub failed), whose
        # absence keeps Last-Event-ID at the last real event.
        "id": {"type": "string", "pattern": "^(0|[1-9][0-9]*)$"}}}


def _error(status: int, codes: list[str]) -> dict[str, Any]:
    return {"description": f"Error: {', '.join(codes)}", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}


def _stream_response() -> dict[str, Any]:
    return {"description": "Server-Sent Events: `start`, then `delta`/`reasoning` (and "
                           "`tool_call`, with client or server-side tools, and "
                           "`tool_result` after a server-side step's calls), then `done` or "
                           "`error`; ids from 0; `: ping` comments in silences.",
            "content": {"text/event-stream": {
                "itemSchema": {"$ref": "#/components/schemas/StreamEvent"}}}}


def _add_tools(request: dict[str, Any], message: dict[str, Any],
               config: Mapping[str, Any]) -> None:
    """Describe client tools in ``request`` (OpenAI's ``tools``, ``tool_choice``, ``tool``
    messages and assistant ``tool_calls``). What JSON Schema cannot state is checked all
    the same: distinct names, each ``function`` at most ``RILL_MAX_TOOL_SCHEMA_BYTES``,
    ``tool_choice`` naming an offered tool, and each ``tool`` message answering a call of
    the assistant message before it. A null ``tools``, ``tool_choice`` or ``tool_calls`` is
    absent."""
    name = {"type": "string", "pattern": f"^{TOOL_NAME.pattern}$"}
    call_id = {"type": "string", "pattern": f"^{TOOL_CALL_ID.pattern}$"}
    tool = {"type": "object", "additionalProperties": False, "required": ["type", "function"],
            "properties": {"type": {"const": "function"}, "function": {
                "type": "object", "additionalProperties": False, "required": ["name"],
                "properties": {"name": name, "description": {"type": "string"},
                               "parameters": {"type": "object",
                                              "properties": {"type": {"const": "object"}}},
                               "strict": {"type": "boolean"}}}}}
    call = {"type": "object", "additionalProperties": True, "required": ["id", "function"],
            "properties": {"id": call_id, "type": {"const": "function"}, "function": {
                "type": "object", "additionalProperties": True,
                "required": ["name", "arguments"],
                "properties": {"name": name, "arguments": {"type": "string"}}}}}
    content = message["properties"]["content"]
    assistant = {"type": "object", "additionalProperties": True,
                 "required": ["role", "tool_calls"], "properties": {
                     "role": {"const": "assistant"},
                     "content": _or_null(content),
                     "tool_calls": {"type": "array", "items": call, "minItems": 1,
                                    "maxItems": config["RILL_MAX_TOOL_CALLS"]}}}
    result = {"type": "object", "additionalProperties": True,
              "required": ["role", "tool_call_id", "content"], "properties": {
                  "role": {"const": "tool"}, "tool_call_id": call_id, "content": content}}
    request["properties"]["messages"]["items"] = {"oneOf": [message, assistant, result]}
    request["properties"]["tools"] = _or_null({
        "type": "array", "items": tool, "minItems": 1, "maxItems": config["RILL_MAX_TOOLS"]})
    request["properties"]["tool_choice"] = {"oneOf": [
        {"enum": [*TOOL_CHOICES, None]},
        {"type": "object", "additionalProperties": False, "required": ["type", "function"],
         "properties": {"type": {"const": "function"}, "function": {
             "type": "object", "additionalProperties": False, "required": ["name"],
             "properties": {"name": name}}}}]}


def document(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the OpenAPI document for the current limits (``RILL_MAX_*``) and models."""
    allowed = allowed_models(config)
    model = ({"type": "string", "minLength": 1, "maxLength": 256} if "*" in allowed
             else {"enum": allowed})
    content = {"type": "string", "maxLength": config["RILL_MAX_MESSAGE_CHARS"]}
    message: dict[str, Any] = {"type": "object", "additionalProperties": True,
                               "required": ["role", "content"], "properties": {
                                   "role": {"enum": ["system", "user", "assistant"]},
                                   "content": content, "tool_calls": {"type": "null"}}}
    request = {"type": "object", "additionalProperties": False, "required": ["messages"],
               "properties": {
                   "messages": {"type": "array", "items": message, "minItems": 1,
                                "maxItems": config["RILL_MAX_MESSAGES"]},
                   # null is absent, as in OpenAI's API: the default model, the cap
                   "model": _or_null(model),
                   "max_tokens": _or_null({"type": "integer", "minimum": 1,
                                           "maximum": config["RILL_MAX_TOKENS"]}),
                   "temperature": _or_null({"type": "number", "minimum": 0, "maximum": 2})}}
    if config["RILL_CLIENT_TOOLS"]:
        _add_tools(request, message, config)
    failures = {str(s): _error(s, c) for s, c in ERROR_CODES.items()}
    stream_id = {"name": "stream_id", "in": "path", "required": True,
                 "schema": {"type": "string", "minLength": 1, "maxLength": 64}}
    return {
        "openapi": "3.2.0",
        "info": {"title": "Rill", "version": "1",
                 "description": "Stream LLM chat completions over Server-Sent Events."},
        "paths": {
            "/api/chat": {"post": {
                "operationId": "startChat", "summary": "Start a chat completion stream",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": request}}},
                "responses": {"200": _stream_response(), **failures}}},
            "/api/chat/{stream_id}/events": {"get": {
                "operationId": "streamEvents", "summary": "Replay and follow a stream",
                "parameters": [stream_id, *({
                    "name": name, "in": where, "required": False,
                    "description": "Replay after this event id (none or empty: from the "
                                   "start); the header wins over the query.",
                    "schema": {"type": "string", "pattern": f"^{LAST_EVENT_ID.pattern}$"}}
                    for name, where in (("Last-Event-ID", "header"),
                                        ("last_event_id", "query")))],
                "responses": {"200": _stream_response(), "204": {
                    "description": "The stream is finished and nothing follows that id "
                                   "(an EventSource stops reconnecting)"}, **failures}}},
            "/api/chat/{stream_id}/cancel": {"post": {
                "operationId": "cancelStream", "summary": "Cancel a stream's generation",
                "parameters": [stream_id],
                "responses": {"202": {"description": "Cancelling", "content": {
                    "application/json": {"schema": {
                        "type": "object", "additionalProperties": False,
                        "required": ["stream_id", "status"], "properties": {
                            "stream_id": {"type": "string"},
                            "status": {"const": "cancelling"}}}}}}, **failures}}},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "param": {"type": "string"}, "retry_after": {"type": "integer"}}}}},
            "StreamEvent": {"oneOf": [_event(kind, data) for kind, data in EVENT_DATA.items()]},
        }},
    }
