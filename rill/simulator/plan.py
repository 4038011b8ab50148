"""Scenario parameters (the model name's query string) and the reply they describe."""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .tool_replies import SHAPES as TOOL_SHAPES
from .tool_replies import Call, plan_calls

BIG_EVENT_BYTES = 150 * 1024
DEFAULT_MODEL = "sim"
LONG_LINE_BYTES = 4 * 1024 * 1024  # fault=long_line without size=
FAULTS = frozenset({"status", "cut", "stall", "hang", "cut_json", "choices_dict", "choices_int",
                    "long_line", "tool_calls", "negative_usage"})
SHAPES = frozenset({
    "usage_chunk", "azure_filter", "null_content", "reasoning_content", "reasoning",
    "llamacpp", "finish_abort", "finish_null", "error_in_stream", "malformed", "no_done",
    "big_event", "multiline", "comments"})
_INT_PARAMS = frozenset({"tokens", "ttft_ms", "itl_ms", "after", "status", "fail_first",
                         "reasoning_tokens", "retry_after", "size", "calls", "pre", "steps"})
_WORD = re.compile(r"\S+\s*|\s+")
_FILTER_OK = {k: {"filtered": False, "severity": "safe"}
              for k in ("hate", "self_harm", "sexual", "violence")}


def expected_text(tokens: int) -> str:
    """The reply text of ``sim?tokens=N``: ``"tok0 tok1 … tok{N-1} "``."""
    return "".join(f"tok{i} " for i in range(tokens))


def parse_params(model: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """Read scenario parameters from ``model`` (``name?k=v&…``) over ``defaults``.

    Integer params (``tokens``, ``*_ms``, ``after``, ``status``, …) become ``int``, the rest
    stay ``str`` (URL-decoded). ``shape`` may name several, comma-separated. Raises
    ``ValueError`` for a non-integer or negative number, or an unknown fault or shape.
    """
    params = dict(defaults)
    params.update(urllib.parse.parse_qsl(model.partition("?")[2], keep_blank_values=True))
    for key in params.keys() & _INT_PARAMS:
        params[key] = int(params[key])
        if params[key] < 0:
            raise ValueError(f"{key} must not be negative")
    if params.get("fault") not in FAULTS | {None}:
        raise ValueError(f"unknown fault {params['fault']!r}; one of {sorted(FAULTS)}")
    if params.get("tools") not in (*TOOL_SHAPES, None):
        raise ValueError(f"unknown tools shape {params['tools']!r}; one of {TOOL_SHAPES}")
    if unknown := shapes_of(params) - SHAPES:
        raise ValueError(f"unknown shape {sorted(unknown)}; one of {sorted(SHAPES)}")
    if not 400 <= params.get("status", 500) <= 599:
        raise ValueError("status must be 400-599")
    return params


def shapes_of(params: dict[str, Any]) -> frozenset[str]:
    return frozenset(s for s in str(params.get("shape", "")).split(",") if s)


@dataclass
class Plan:
    """One chat request's reply: texts, timing (s), shapes, fault."""

    ident: str
    model: str
    tokens: list[str]
    reasoning: list[str]
    finish: str | None
    shapes: frozenset[str]
    params: dict[str, Any]
    usage: dict[str, int]
    include_usage: bool
    ttft: float
    itl: float
    tool_calls: list[Call]  # (id, name, arguments): answered with these instead of text


def make_plan(params: dict[str, Any], body: dict[str, Any], record_id: int) -> Plan:
    """Derive the reply from scenario ``params`` and the request ``body``."""
    shapes = shapes_of(params)
    if "text" in params:
        tokens = _WORD.findall(str(params["text"]))
    else:
        tokens = [f"tok{i} " for i in range(params.get("tokens", 20))]
    calls = plan_calls(params, body, record_id)
    if calls:
        tokens = tokens[:params.get("pre", 0)]
        shapes |= {"llamacpp"} if params["tools"] == "llamacpp" else set()
    finish: str | None = "stop"
    caps = [v for k in ("max_tokens", "max_completion_tokens")
            if isinstance(v := body.get(k), int) and v >= 0]
    if caps and len(tokens) > min(caps):
        tokens, finish = tokens[:min(caps)], "length"
    if "finish_abort" in shapes or "finish_null" in shapes:
        finish = "abort" if "finish_abort" in shapes else None
    reasoning = []
    if shapes & {"reasoning", "reasoning_content"}:
        reasoning = [f"think{i} " for i in range(params.get("reasoning_tokens", 5))]
    messages = body.get("messages")
    prompt = sum(len(str(m.get("content", "")).split()) for m in messages
                 if isinstance(m, dict)) if isinstance(messages, list) else 0
    options = body.get("stream_options")
    return Plan(f"chatcmpl-sim-{record_id}", str(body.get("model") or "").split("?")[0],
                tokens, reasoning, finish, shapes, params,
                {"prompt_tokens": prompt, "completion_tokens": len(tokens) + len(calls),
                 "total_tokens": prompt + len(tokens) + len(calls)},
                isinstance(options, dict) and bool(options.get("include_usage")),
                params.get("ttft_ms", 0) / 1000, params.get("itl_ms", 0) / 1000, calls)


def chunk_maker(plan: Plan) -> Callable[..., dict[str, Any]]:
    """Return ``chunk(delta, finish_reason=None)`` building ``chat.completion.chunk`` dicts.

    ``delta=None`` builds Azure's content-filter chunk, whose choice has no delta at all.
    """
    created = int(time.time())

    def chunk(delta: dict[str, Any] | None, finish_reason: str | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        if delta is None:
            del choice["delta"]
            choice["content_filter_results"] = _FILTER_OK
        data = {"id": plan.ident, "object": "chat.completion.chunk", "created": created,
                "model": plan.model, "choices": [choice]}
        if "llamacpp" in plan.shapes:
            data["system_fingerprint"] = "b4000-sim"
        if plan.include_usage:
            data["usage"] = None  # as OpenAI: null on every chunk but the usage one
        return data

    return chunk


def azure_prompt_filter() -> dict[str, Any]:
    """Azure's first chunk: prompt filter results, no choices."""
    return {"choices": [], "created": 0, "id": "", "model": "", "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTER_OK}]}
