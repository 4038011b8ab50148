"""The simulator's replies: a streamed completion (with its shapes and faults) or a whole one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from .plan import BIG_EVENT_BYTES, Plan, azure_prompt_filter, chunk_maker
from .wire import STREAM_HEAD, Cut, Wire, json_response

YIELD_EVERY = 64  # tokens between hub yields when itl_ms=0


def stream(wire: Wire, plan: Plan, record: dict[str, Any]) -> str:
    """Write one streamed completion, head included; return its outcome.

    Timing: ``ttft`` before the role chunk, ``itl`` before every later token (reasoning
    first). Faults, ``error_in_stream`` and ``malformed`` act after ``after`` content tokens.
    """
    wire.send(STREAM_HEAD)
    wire.multiline = "multiline" in plan.shapes
    chunk = chunk_maker(plan)
    if "azure_filter" in plan.shapes:
        wire.event(azure_prompt_filter())
    wire.wait(plan.ttft)
    wire.event(chunk({"role": "assistant", "content": None if plan.reasoning else ""}))
    key = "reasoning_content" if "reasoning_content" in plan.shapes else "reasoning"
    for i, text in enumerate(plan.reasoning):
        _pace(wire, plan, i)
        wire.event(chunk({key: text, "content": None}))
    if "big_event" in plan.shapes:
        wire.event(chunk({"content": "x" * BIG_EVENT_BYTES}))
    stop_at = min(plan.params.get("after", 2), len(plan.tokens))
    for i, token in enumerate(plan.tokens):
        if i == stop_at and _fault_point(wire, plan):
            return "fault"
        _pace(wire, plan, i + len(plan.reasoning))
        _content_events(wire, chunk, plan.shapes, token)
        record["tokens_sent"] += 1
    if stop_at == len(plan.tokens) and _fault_point(wire, plan):
        return "fault"
    _finish(wire, chunk, plan)
    return "completed"


def _pace(wire: Wire, plan: Plan, index: int) -> None:
    """Wait before token ``index`` (0-based): ``itl``, or with none a hub yield every 64."""
    if plan.itl and index:
        wire.wait(plan.itl)
    elif index and index % YIELD_EVERY == 0:
        wire.wait(0)  # never starve the other streams


def _fault_point(wire: Wire, plan: Plan) -> bool:
    """Act out what is due after ``after`` tokens; return True if the stream ends here."""
    if plan.params.get("fault") == "cut":
        wire.send(b"")
        raise Cut
    if plan.params.get("fault") == "stall":
        wire.wait(None)
    if "error_in_stream" in plan.shapes:
        wire.event({"error": {"message": "simulated failure", "type": "server_error",
                              "code": "internal_error"}})
        wire.end()
        return True
    if "malformed" in plan.shapes:
        wire.lines("data: {not json")
    return False


def _content_events(wire: Wire, chunk: Callable[..., dict[str, Any]],
                    shapes: frozenset[str], text: str) -> None:
    if "null_content" in shapes:
        wire.event(chunk({"content": None}))
        wire.event(chunk({"content": ""}))
    wire.event(chunk({"content": text}))
    if "azure_filter" in shapes:
        wire.event(chunk(None))
    if "comments" in shapes:
        wire.lines(": keep-alive")


def _finish(wire: Wire, chunk: Callable[..., dict[str, Any]], plan: Plan) -> None:
    """Send the finish chunk, the usage chunk, ``[DONE]`` and the end, as ``plan`` says."""
    if plan.finish is not None:
        last = chunk({}, plan.finish)
        if "llamacpp" in plan.shapes:
            last["timings"] = {"prompt_n": plan.usage["prompt_tokens"],
                               "predicted_n": plan.usage["completion_tokens"],
                               "predicted_per_second": 50.0}
        wire.event(last)
    if plan.include_usage or plan.shapes & {"usage_chunk", "llamacpp"}:
        usage = chunk({})
        usage["choices"], usage["usage"] = [], plan.usage
        wire.event(usage)
    if "no_done" not in plan.shapes:
        wire.event("[DONE]")
    wire.end()


def respond_whole(wire: Wire, plan: Plan, record: dict[str, Any]) -> str:
    """Answer ``stream: false`` with one ``chat.completion`` after the generation time.

    ``fault=cut`` sends the head and half the body, then closes; ``stall`` stops there.
    """
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.tokens)}
    if plan.reasoning:
        key = "reasoning_content" if "reasoning_content" in plan.shapes else "reasoning"
        message[key] = "".join(plan.reasoning)
    body = orjson.dumps({
        "id": plan.ident, "object": "chat.completion", "created": int(time.time()),
        "model": plan.model, "usage": plan.usage,
        "choices": [{"index": 0, "message": message, "finish_reason": plan.finish}]})
    response = json_response(200, body)
    if plan.params.get("fault") in ("cut", "stall"):
        wire.send(response[:len(response) - len(body) // 2])
        if plan.params.get("fault") == "cut":
            raise Cut
        wire.wait(None)
    wire.wait(plan.ttft + plan.itl * max(len(plan.tokens) + len(plan.reasoning) - 1, 0))
    wire.send(response)
    record["tokens_sent"] = len(plan.tokens)
    return "completed"
