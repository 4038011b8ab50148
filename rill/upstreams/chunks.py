"""Checking and reading ``chat.completion.chunk`` events (OpenAI API reference, "Chat
completions: the chat completion chunk object"), as any OpenAI-compatible server sends them."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from .. import errors
from . import Event
from .tool_calls import ToolCallReader

log = logging.getLogger(__name__)

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


class ChunkParser:
    """Turns ``chat.completion.chunk`` JSON into Rill events; ``done`` at ``[DONE]``.

    Rules, for each SSE ``data`` value, in order:

    1. ``[DONE]``: ``done`` ``{"finish_reason", "usage"}`` (the last seen of each; after
       tool calls, a ``stop`` or no finish reason is ``tool_calls``, as Gemini's OpenAI
       compatibility finishes them ``stop``).
    2. Refused as malformed (``error`` ``upstream_malformed``): data that is not JSON (cut
       JSON included) or not a JSON object.
    3. An object with a truthy ``error``: ``error`` ``upstream_error``.
    4. Refused as malformed: ``choices`` present, not null and not a list; a choice that
       is not an object; ``delta`` present, not null and not an object; ``delta.content``
       neither a string nor null; ``finish_reason`` neither a string nor null.
    5. Tool calls. When the request offered ``tools``, ``delta.tool_calls`` fragments become
       ``tool_call`` events ``{"index", "id", "name", "arguments"}`` (after the chunk's text;
       the shapes and what is refused as malformed: :mod:`rill.upstreams.tool_calls`), and
       ``finish_reason`` ``tool_calls`` ends them; that finish reason with no call before it
       is refused as malformed. Refused as unsupported (``error`` ``upstream_unsupported``),
       after the chunk's own text: a non-empty ``delta.tool_calls`` or ``finish_reason``
       ``tool_calls`` when the request offered no tools (a call Rill cannot relay would
       otherwise end the answer as complete with nothing said), and always the legacy
       ``delta.function_call`` and ``finish_reason`` ``function_call`` (deprecated by OpenAI;
       Rill never sends ``functions``).
    6. Tolerated, as providers send them: no ``choices``, or an empty list (Azure's
       content-filter chunks, usage-only chunks); a choice without ``delta`` (Azure);
       null or empty content; extra keys anywhere (llama.cpp's ``timings``,
       ``system_fingerprint``); reasoning in ``delta.reasoning_content`` (DeepSeek,
       llama.cpp) or ``delta.reasoning`` (vLLM, OpenRouter), ignored unless a string.
       Only the first choice is read (Rill asks for one).
    7. ``usage``: an object's ``prompt_tokens``, ``completion_tokens`` and
       ``total_tokens`` are kept when they are non-negative integers, else dropped (null,
       logged): token counts are advisory, and the text they come with is complete. A
       ``usage`` that is not an object is ignored.

    A refused chunk ends the stream; every event before it (in the same ``data`` list too)
    is returned, and nothing of it or after it. ``error`` holds the ending error.
    """

    __slots__ = ("done", "error", "finish_reason", "tool_calls", "usage")

    def __init__(self, tools: bool = False, first_call: int = 0) -> None:
        """``tools``: the request offered tools, so tool calls are relayed (rule 5);
        ``first_call``: the ``index`` its first call gets (the calls of earlier steps)."""
        self.done = False
        self.error: errors.UpstreamError | None = None
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.tool_calls = ToolCallReader(first_call) if tools else None

    def parse(self, data: list[bytes]) -> list[Event]:
        """Return the events of these SSE ``data`` values, up to ``done`` (which sets
        ``done``) or a refused or ``{"error": ...}`` event (which sets ``error``)."""
        events: list[Event] = []
        for raw in data:
            if raw == b"[DONE]":
                finish = self.finish_reason
                if self.tool_calls and self.tool_calls.count and finish in (None, "stop"):
                    finish = "tool_calls"
                events.append(("done", {"finish_reason": finish, "usage": self.usage}))
                self.done = True
                break
            try:
                chunk = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.refuse(f"an event that is not JSON ({len(raw)} bytes)")
                break
            if type(chunk) is not dict:
                self.refuse(f"an event that is a JSON {type(chunk).__name__}, not an object")
                break
            if chunk.get("error"):
                log.warning("upstream sent an error event mid-stream")
                self.error = errors.UpstreamError(
                    "The model provider reported an error mid-answer; the answer is "
                    "incomplete.")
                break
            if not self._read(chunk, events):
                break
        return events

    def refuse(self, problem: str) -> None:
        """End the stream as malformed; ``problem`` goes to the log, not to the client."""
        log.warning("upstream sent a malformed chunk: %s; ending the stream", problem)
        self.error = errors.UpstreamMalformed()

    def _read(self, chunk: dict[str, Any], events: list[Event]) -> bool:
        """Append ``chunk``'s events; return False if it ended the stream (``error`` set)."""
        choices = chunk.get("choices")
        if choices:
            if type(choices) is not list:
                self.refuse(f"`choices` is a {type(choices).__name__}, not a list")
                return False
            choice = choices[0]
            if type(choice) is not dict or (len(choices) > 1 and not all(
                    type(c) is dict for c in choices)):
                self.refuse("a choice is not an object")
                return False
            finish = choice.get("finish_reason")
            if finish is not None and type(finish) is not str:
                self.refuse(f"`finish_reason` is a {type(finish).__name__}")
                return False
            delta = choice.get("delta")
            if delta is not None and not self._read_delta(delta, events):
                return False
            reader = self.tool_calls
            if finish == "function_call" or (finish == "tool_calls" and reader is None):
                return self._unsupported(f"finish_reason {finish}")
            if finish == "tool_calls" and reader is not None and not reader.count:
                self.refuse("finish_reason tool_calls without a tool call")
                return False
            self.finish_reason = finish or self.finish_reason
        elif choices is not None and type(choices) is not list:
            self.refuse(f"`choices` is {choices!r:.20}, not a list")
            return False
        usage = chunk.get("usage")
        if usage is not None:
            self._read_usage(usage)
        return True

    def _read_delta(self, delta: Any, events: list[Event]) -> bool:
        mark = len(events)
        if type(delta) is not dict:
            self.refuse(f"`delta` is a {type(delta).__name__}, not an object")
            return False
        content = delta.get("content")
        if content is not None and type(content) is not str:
            self.refuse(f"`delta.content` is a {type(content).__name__}, not a string")
            return False
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and type(reasoning) is str:
            events.append(("reasoning", {"content": reasoning}))
        if content:
            events.append(("delta", {"content": content}))
        if delta.get("function_call"):
            return self._unsupported("delta.function_call")
        fragments, reader = delta.get("tool_calls"), self.tool_calls
        if fragments and reader is None:
            return self._unsupported("delta.tool_calls")
        if fragments and reader is not None and (problem := reader.read(fragments, events)):
            del events[mark:]  # nothing of a malformed chunk
            self.refuse(problem)
            return False
        return True

    def _unsupported(self, what: str) -> bool:
        log.warning("upstream answered with tool calls it was not offered (%s); ending the "
                    "stream", what)
        self.error = errors.UpstreamUnsupported()
        return False

    def _read_usage(self, usage: Any) -> None:
        if type(usage) is not dict:
            log.warning("upstream sent a usage that is a %s; ignored", type(usage).__name__)
            return
        kept = {key: value if type(value := usage.get(key)) is int and value >= 0 else None
                for key in USAGE_KEYS}
        if any(kept[key] is None and usage.get(key) is not None for key in USAGE_KEYS):
            log.warning("upstream sent usage counts that are not non-negative integers; "
                        "dropped them")
        self.usage = kept
