"""The OpenAPI 3.1 document of Rill's API, built from the live settings.

Served at ``GET /api/openapi.json``. The SSE body of a stream is described in prose and as
a schema per event (``x-sse-events``), since OpenAPI has no type for an event stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ERROR_CODES: dict[int, list[str]] = {
    400: ["invalid_json", "unknown_field", "invalid_messages", "invalid_model",
          "invalid_max_tokens", "invalid_temperature", "invalid_last_event_id"],
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
STREAM_ERROR_CODES = ["upstream_error", "upstream_cut", "upstream_stalled", "timeout",
                      "producer_lost", "shutdown", "hub_unavailable", "events_expired",
                      "internal"]


def _error(status: int, codes: list[str]) -> dict[str, Any]:
    return {"description": f"Error: {', '.join(codes)}", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}


def _stream_response() -> dict[str, Any]:
    return {"description": "Server-Sent Events (WHATWG HTML, server-sent events): `start`, "
                           "then `delta`/`reasoning`, then `done` or `error`; ids from 0; "
                           "`: ping` comments in silences.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}}}


def document(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the OpenAPI document for the current limits (``RILL_MAX_*``)."""
    message = {"type": "object", "additionalProperties": True,
               "required": ["role", "content"], "properties": {
                   "role": {"enum": ["system", "user", "assistant"]},
                   "content": {"type": "string",
                               "maxLength": config["RILL_MAX_MESSAGE_CHARS"]}}}
    request = {"type": "object", "additionalProperties": False, "required": ["messages"],
               "properties": {
                   "messages": {"type": "array", "items": message, "minItems": 1,
                                "maxItems": config["RILL_MAX_MESSAGES"]},
                   "model": {"type": "string", "minLength": 1, "maxLength": 256},
                   "max_tokens": {"type": "integer", "minimum": 1,
                                  "maximum": config["RILL_MAX_TOKENS"]},
                   "temperature": {"type": "number", "minimum": 0, "maximum": 2}}}
    failures = {str(s): _error(s, c) for s, c in ERROR_CODES.items()}
    stream_id = {"name": "stream_id", "in": "path", "required": True,
                 "schema": {"type": "string", "minLength": 1, "maxLength": 64}}
    return {
        "openapi": "3.1.0",
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
                "parameters": [stream_id, {
                    "name": "Last-Event-ID", "in": "header", "required": False,
                    "schema": {"type": "string", "maxLength": 32}}],
                "responses": {"200": _stream_response(), "204": {
                    "description": "The stream is finished and nothing follows that id "
                                   "(an EventSource stops reconnecting)"}, **failures}}},
            "/api/chat/{stream_id}/cancel": {"post": {
                "operationId": "cancelStream", "summary": "Cancel a stream's generation",
                "parameters": [stream_id],
                "responses": {"202": {"description": "Cancelling", "content": {
                    "application/json": {"schema": {"type": "object"}}}}, **failures}}},
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "string"}, "message": {"type": "string"},
                    "param": {"type": "string"}, "retry_after": {"type": "integer"}}}}},
        }},
        "x-sse-events": {
            "start": {"stream_id": "string", "model": "string"},
            "delta": {"content": "string"},
            "reasoning": {"content": "string"},
            "done": {"finish_reason": "string | null", "usage": "object | null"},
            "error": {"code": STREAM_ERROR_CODES, "message": "string"},
        },
    }
