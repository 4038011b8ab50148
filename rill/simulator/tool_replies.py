"""The simulator's tool-call replies: streamed ``delta.tool_calls`` in each server's shape.

``sim?tools=<shape>&calls=N`` answers a request that offers ``tools`` (and whose last message
is not a ``tool`` result) with N calls, of the offered tools in turn (or of the names in
``call``, comma-separated), whose arguments are :func:`tool_call_arguments` (or ``args``,
JSON text, for every call), after ``pre`` content tokens (default 0). With ``steps=S`` it
answers with calls until the conversation holds S - 1 rounds of them (assistant messages
with ``tool_calls``), then with text, whatever the last message is: S model steps. Shapes,
as the servers send them (OpenAI API reference, "Chat completions: streaming"; the
servers' own streams):

- ``openai``: the id, ``type`` and name with ``arguments: ""``, then argument fragments;
  calls one after the other; ``finish_reason`` ``tool_calls``.
- ``vllm``: the id, ``type`` and name without ``arguments``, then fragments, every other one
  repeating the id and ``type``, an empty one, and the last in the finish chunk.
- ``llamacpp``: the id, ``type`` and name with the first fragment, ``content: null``; then
  fragments; the finish chunk with ``timings`` and a usage chunk.
- ``litellm``: OpenAI's, later fragments with ``id``, ``type`` and ``name`` null, and each
  call after the first whole in one chunk.
- ``gemini``: every call whole in one chunk, without ``index``, with ``finish_reason``
  ``stop`` (Gemini's OpenAI compatibility).
- ``parallel``: every call's head in one chunk, then their fragments interleaved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from .wire import Wire

SHAPES = ("openai", "vllm", "llamacpp", "litellm", "gemini", "parallel")
PIECE_CHARS = 5  # argument fragments are this long
_CITIES = ("Paris", "Tokyo", "Lima", "Oslo")
_IDS = {"openai": "call_sim{r}n{i}", "vllm": "chatcmpl-tool-sim{r}n{i}",
        "llamacpp": "sim{r}n{i}", "litellm": "call_sim{r}n{i}",
        "gemini": "function-call-{r}{i}", "parallel": "call_sim{r}n{i}"}

Call = tuple[str, str, str]  # id, name, arguments
Chunk = Callable[..., dict[str, Any]]


def tool_call_arguments(i: int) -> str:
    """The JSON arguments of call ``i`` (from 0) of a tool-call reply."""
    return orjson.dumps({"location": _CITIES[i % len(_CITIES)], "call": i}).decode()


def plan_calls(params: dict[str, Any], body: dict[str, Any], record_id: int) -> list[Call]:
    """The calls ``params`` ask for, if the request offers tools and does not end with a
    tool result (with ``steps``: holds fewer than ``steps - 1`` rounds of calls); else none
    (the reply is text)."""
    shape = params.get("tools")
    tools, messages = body.get("tools"), body.get("messages")
    names = [t["function"]["name"] for t in tools if isinstance(t, dict)
             and isinstance(t.get("function"), dict)] if isinstance(tools, list) else []
    messages = messages if isinstance(messages, list) else []
    last = messages[-1] if messages else None
    if not shape or not names:
        return []
    if "steps" in params:
        rounds = sum(1 for m in messages if isinstance(m, dict) and m.get("tool_calls"))
        if rounds >= params["steps"] - 1:
            return []
    elif isinstance(last, dict) and last.get("role") == "tool":
        return []
    if params.get("call"):
        names = str(params["call"]).split(",")
    return [(_IDS[shape].format(r=record_id, i=i), names[i % len(names)],
             str(params["args"]) if "args" in params else tool_call_arguments(i))
            for i in range(params.get("calls", 1))]


def pieces(arguments: str) -> list[str]:
    return [arguments[i:i + PIECE_CHARS] for i in range(0, len(arguments), PIECE_CHARS)]


def send(wire: Wire, shape: str, calls: list[Call], chunk: Chunk,
         itl: float) -> tuple[str, dict[str, Any]]:
    """Send ``calls`` in ``shape``, a chunk every ``itl`` seconds; return the finish reason
    and the finish chunk's delta."""
    deltas, finish = _SHAPES[shape](calls)
    last = deltas.pop() if shape in ("vllm", "gemini") else {}
    for n, delta in enumerate(deltas):
        if n and itl:
            wire.wait(itl)
        wire.event(chunk(delta))
    if itl:
        wire.wait(itl)
    return finish, last


def _head(i: int, call: Call, arguments: str | None = "", **extra: Any) -> dict[str, Any]:
    function = {"name": call[1]} if arguments is None else {"name": call[1],
                                                            "arguments": arguments}
    return {"index": i, "id": call[0], "type": "function", "function": function, **extra}


def _piece(i: int, arguments: str, **extra: Any) -> dict[str, Any]:
    return {"tool_calls": [{"index": i, "function": {"arguments": arguments}, **extra}]}


def _openai(calls: list[Call]) -> tuple[list[dict[str, Any]], str]:
    deltas = []
    for i, call in enumerate(calls):
        deltas.append({"tool_calls": [_head(i, call)]})
        deltas += [_piece(i, p) for p in pieces(call[2])]
    return deltas, "tool_calls"


def _vllm(calls: list[Call]) -> tuple[list[dict[str, Any]], str]:
    deltas = []
    for i, call in enumerate(calls):
        deltas.append({"tool_calls": [_head(i, call, None)]})
        for n, p in enumerate(pieces(call[2])):
            repeat = {"id": call[0], "type": "function"} if n % 2 else {}
            deltas.append({"tool_calls": [{**_piece(i, p)["tool_calls"][0], **repeat}]})
            if n == 0:
                deltas.append(_piece(i, ""))
    return deltas, "tool_calls"  # the last fragment goes in the finish chunk


def _llamacpp(calls: list[Call]) -> tuple[list[dict[str, Any]], str]:
    deltas = []
    for i, call in enumerate(calls):
        first, *rest = pieces(call[2])
        deltas.append({"content": None, "tool_calls": [_head(i, call, first)]})
        deltas += [_piece(i, p) for p in rest]
    return deltas, "tool_calls"


def _litellm(calls: list[Call]) -> tuple[list[dict[str, Any]], str]:
    deltas = []
    for i, call in enumerate(calls):
        if i:
            deltas.append({"content": None, "tool_calls": [_head(i, call, call[2])]})
            continue
        deltas.append({"content": None, "tool_calls": [_head(i, call)]})
        deltas += [{"content": None, "tool_calls": [{
            "id": None, "type": None, "index": i,
            "function": {"name": None, "arguments": p}}]} for p in pieces(call[2])]
    return deltas, "tool_calls"


def _gemini(calls: list[Call]) -> tuple[list[dict[str, Any]], str]:
    whole = [{"id": call[0], "type": "function",
              "function": {"name": call[1], "arguments": call[2]}} for call in calls]
    return [{"role": "assistant", "tool_calls": whole}], "stop"


def _parallel(calls: list[Call]) -> tuple[list[dict[str, Any]], str]:
    deltas: list[dict[str, Any]] = [{"tool_calls": [_head(i, c) for i, c in enumerate(calls)]}]
    split = [pieces(call[2]) for call in calls]
    for n in range(max(len(p) for p in split)):
        deltas += [_piece(i, p[n]) for i, p in enumerate(split) if n < len(p)]
    return deltas, "tool_calls"


_SHAPES: dict[str, Callable[[list[Call]], tuple[list[dict[str, Any]], str]]] = {
    "openai": _openai, "vllm": _vllm, "llamacpp": _llamacpp, "litellm": _litellm,
    "gemini": _gemini, "parallel": _parallel}
