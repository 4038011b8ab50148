"""The simulator's replies: a streamed completion (with its shapes and faults) or a whole one."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from . import tool_replies
from .plan import BIG_EVENT_BYTES, LONG_LINE_BYTES, Plan, azure_prompt_filter, chunk_maker
from .wire import FLUSH_BYTES, STREAM_HEAD, Cut, Wire, json_response

YIELD_EVERY = 64  # tokens between hub yields when itl_ms=0
REPLACED = "replaced"  # a fault sent the next token in an odd chunk of its own


def stream(wire: Wire, plan: Plan, record: dict[str, Any]) -> str:
    """Write one streamed completion, head included; return its outcome.

    Timing: ``ttft`` before the role chunk, ``itl`` before every later token (reasoning
    first). Faults, ``error_in_stream`` and ``malformed`` act after ``after`` content tokens;
    ``cut_json``, ``choices_*`` and ``long_line`` send the next token in their odd chunk,
    then go on; ``negative_usage`` acts in the usage chunk.
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
        action = _fault_point(wire, plan, chunk, token) if i == stop_at else None
        if action is not None and action != REPLACED:
            return action
        if action is None:
            _pace(wire, plan, i + len(plan.reasoning))
            _content_events(wire, chunk, plan.shapes, token)
        record["tokens_sent"] += 1
    if (stop_at == len(plan.tokens)
            and (action := _fault_point(wire, plan, chunk, "")) not in (None, REPLACED)):
        return action
    if plan.tool_calls:
        if plan.tokens:
            _pace(wire, plan, 1)
        _finish(wire, chunk, plan, *tool_replies.send(wire, plan.params["tools"],
                                                      plan.tool_calls, chunk, plan.itl))
        return "completed"
    _finish(wire, chunk, plan)
    return "completed"


def _pace(wire: Wire, plan: Plan, index: int) -> None:
    """Wait before token ``index`` (0-based): ``itl``, or with none a hub yield every 64."""
    if plan.itl and index:
        wire.wait(plan.itl)
    elif index and index % YIELD_EVERY == 0:
        wire.wait(0)  # never starve the other streams


def _fault_point(wire: Wire, plan: Plan, chunk: Callable[..., dict[str, Any]],
                 token: str) -> str | None:
    """Act out what is due after ``after`` tokens, where ``token`` would come next.

    Returns the outcome if the stream ends here, :data:`REPLACED` if ``token`` went out in
    an odd chunk instead of its own, else ``None``.
    """
    fault = plan.params.get("fault")
    if fault == "cut":
        wire.send(b"")
        raise Cut
    if fault == "stall":
        wire.wait(None)
    if fault in _ODD_CHUNKS:
        _ODD_CHUNKS[fault](wire, plan, chunk({"content": token}))
        return REPLACED
    if fault == "tool_calls":
        _tool_calls(wire, chunk)
        _finish(wire, chunk, plan, "tool_calls")
        return "completed"
    if "error_in_stream" in plan.shapes:
        wire.event({"error": {"message": "simulated failure", "type": "server_error",
                              "code": "internal_error"}})
        wire.end()
        return "fault"
    if "malformed" in plan.shapes:
        wire.lines("data: {not json")
    return None


def _cut_json(wire: Wire, plan: Plan, data: dict[str, Any]) -> None:
    """The chunk's JSON cut in half, as one whole event."""
    raw = orjson.dumps(data)
    wire.lines("data: " + raw[:len(raw) // 2].decode(errors="ignore"))


def _choices_dict(wire: Wire, plan: Plan, data: dict[str, Any]) -> None:
    wire.event({**data, "choices": data["choices"][0]})


def _choices_int(wire: Wire, plan: Plan, data: dict[str, Any]) -> None:
    wire.event({**data, "choices": 0})


def _long_line(wire: Wire, plan: Plan, data: dict[str, Any]) -> None:
    """One ``data:`` line of ``size`` bytes (a content chunk of x's), sent a piece at a time
    and only then ended: a receiver must either hold it all or refuse it."""
    head, tail = b'data: {"choices":[{"index":0,"delta":{"content":"', b'"}}]}\n\n'
    left = max(plan.params.get("size", LONG_LINE_BYTES) - len(head) - len(tail), 0)
    wire.chunk(head)
    piece = b"x" * FLUSH_BYTES
    while left > 0:
        wire.chunk(piece[:left])
        left -= FLUSH_BYTES
    wire.chunk(tail)


_ODD_CHUNKS: dict[str, Callable[[Wire, Plan, dict[str, Any]], None]] = {
    "cut_json": _cut_json, "choices_dict": _choices_dict, "choices_int": _choices_int,
    "long_line": _long_line}


def _tool_calls(wire: Wire, chunk: Callable[..., dict[str, Any]]) -> None:
    """A function call streamed as OpenAI does: the call's id and name, then its arguments
    in fragments (OpenAI API reference, "Chat completions: streaming", ``delta.tool_calls``)."""
    wire.event(chunk({"content": None, "tool_calls": [{
        "index": 0, "id": "call_sim_1", "type": "function",
        "function": {"name": "get_weather", "arguments": ""}}]}))
    for fragment in ('{"', 'location', '":"', 'Paris', '"}'):
        wire.event(chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}))


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


def _finish(wire: Wire, chunk: Callable[..., dict[str, Any]], plan: Plan,
            finish: str | None = None, delta: dict[str, Any] | None = None) -> None:
    """Send the finish chunk (with ``delta``), the usage chunk, ``[DONE]`` and the end, as
    ``plan`` says."""
    finish = finish or plan.finish
    if finish is not None:
        last = chunk(delta or {}, finish)
        if "llamacpp" in plan.shapes:
            last["timings"] = {"prompt_n": plan.usage["prompt_tokens"],
                               "predicted_n": plan.usage["completion_tokens"],
                               "predicted_per_second": 50.0}
        wire.event(last)
    negative = plan.params.get("fault") == "negative_usage"
    if plan.include_usage or negative or plan.shapes & {"usage_chunk", "llamacpp"}:
        usage = chunk({})
        usage["choices"], usage["usage"] = [], dict(plan.usage)
        if negative:
            usage["usage"].update(completion_tokens=-5, total_tokens=-5)
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
