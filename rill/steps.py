"""Server-side tool steps: one answer made of several model steps (issue 17, item 2).

When the request's user is offered server-side tools (:mod:`rill.tools`), the upstream
request carries them after the client's own (:func:`plan`). A model step that ends with
tool calls that are all server-side (no name among the client's tools) is not the end of
the answer: its ``done`` is held back, the calls run in parallel (a
:class:`~rill.tools.ToolRun` each), one ``tool_result`` event per call follows in call order,
and the conversation, grown by the assistant's message (its text and ``tool_calls``) and a
``tool`` message per result (OpenAI chat completions), goes upstream again as the next
step. Any client-side call ends the answer ``done`` ``tool_calls`` as with client tools
alone. The ``done`` that ends the answer carries the usage summed over its steps (null if a
step reported none). A step past ``RILL_MAX_TOOL_STEPS`` that asks for server tools ends the
answer with ``error`` ``tool_steps_exceeded``, and its calls are not run.

The :class:`~rill.generation.Generation` holds a :class:`ToolSteps` and asks it at each
step's end; a producer runs :meth:`~rill.generation.Generation.next_step` (which blocks: it
waits for the tools and opens the next upstream stream) in a task, never in gevent's hub.
Limits on what the model sends: a call's arguments longer than ``RILL_MAX_MESSAGE_CHARS``
characters, and calls past ``RILL_MAX_TOOL_CALLS`` in one step, are refused as results
(``ok: false``), not run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from flask import Flask

from . import errors, metrics
from .chat_request import ChatRequest
from .tools import ToolCall, ToolRegistry, ToolResult, ToolRun
from .upstreams import Event, Upstream, UpstreamStream

log = logging.getLogger(__name__)
RUN, END, EXCEEDED = "run", "end", "exceeded"  # what a step's end means (ToolSteps.finish)


def plan(request: ChatRequest, registry: ToolRegistry, upstream: Upstream, user: str | None,
         app: Flask) -> tuple[ChatRequest, ToolSteps | None]:
    """``request`` with the server-side tools ``user`` is offered, and the steps that run
    them; ``(request, None)`` when none is offered. Call it in the view (``allow`` runs
    here), with ``app`` the real app (``current_app._get_current_object()``).

    Raises :class:`~rill.errors.InvalidRequest` ``invalid_tools`` (400) when a client tool
    has the name of an offered server tool.
    """
    offered = registry.offered(user)
    if not offered:
        return request, None
    client = request.tools or []
    server_names = {tool["function"]["name"] for tool in offered}
    for i, tool in enumerate(client):
        if (name := tool["function"]["name"]) in server_names:
            raise errors.InvalidRequest(
                f"The tool name {name!r} is taken by a tool of this server; give yours "
                "another name.", code="invalid_tools", param=f"tools[{i}].function.name")
    request = replace(request, tools=[*client, *offered])
    config = app.config
    return request, ToolSteps(
        request, upstream, registry, user, app,
        client_names=frozenset(tool["function"]["name"] for tool in client),
        max_steps=config["RILL_MAX_TOOL_STEPS"], max_calls=config["RILL_MAX_TOOL_CALLS"],
        max_argument_chars=config["RILL_MAX_MESSAGE_CHARS"])


@dataclass
class _Call:
    id: str
    name: str
    arguments: str
    refusal: str | None = None  # why it is not run


class ToolSteps:
    """The steps of one answer: gathers a step's text and calls, decides what its end
    means, runs the calls and opens the next step. ``step`` counts model steps from 1."""

    def __init__(self, request: ChatRequest, upstream: Upstream, registry: ToolRegistry,
                 user: str | None, app: Flask, *, client_names: frozenset[str],
                 max_steps: int, max_calls: int, max_argument_chars: int) -> None:
        self.request, self.upstream, self.registry = request, upstream, registry
        self.user, self.app, self.client_names = user, app, client_names
        self.max_steps, self.max_calls, self.max_chars = max_steps, max_calls, max_argument_chars
        self.step = 1
        self._text: list[str] = []
        self._calls: list[_Call] = []
        self._usage: dict[str, Any] | None = None
        self._runs: list[ToolRun] = []
        self._cancelled = False

    def gather(self, events: list[Event]) -> None:
        """Keep what this step said (text, tool calls), from its events as read."""
        for kind, data in events:
            if kind == "delta":
                self._text.append(data["content"])
            elif kind == "tool_call" and data["id"] is not None:
                refusal = (f"Too many tool calls at once (at most {self.max_calls}); this one "
                           "was not run." if len(self._calls) >= self.max_calls else None)
                self._calls.append(_Call(data["id"], data["name"], "", refusal))
                self._add_arguments(self._calls[-1], data["arguments"])
            elif kind == "tool_call":
                self._add_arguments(self._calls[data["index"] - self.request.first_call],
                                    data["arguments"])

    def _add_arguments(self, call: _Call, arguments: str) -> None:
        if call.refusal is not None:
            return  # not kept: nothing runs it
        if len(call.arguments) + len(arguments) > self.max_chars:
            call.arguments = ""
            call.refusal = (f"The arguments for {call.name} are longer than "
                            f"{self.max_chars} characters; the call was not run.")
            return
        call.arguments += arguments

    def finish(self, done: Mapping[str, Any]) -> tuple[str, Event]:
        """What the step's ``done`` means: :data:`RUN` (run the calls, then the next step;
        the event is not sent), :data:`END` (send the event: ``done`` with the summed usage),
        or :data:`EXCEEDED` (send the event: ``error`` ``tool_steps_exceeded``)."""
        self._usage = _add_usage(self._usage, done.get("usage"), first=self.step == 1)
        server = (done.get("finish_reason") == "tool_calls" and self._calls
                  and not any(call.name in self.client_names for call in self._calls))
        if not server:
            return END, ("done", {**done, "usage": self._usage})
        if self.step >= self.max_steps:
            log.warning("an answer asked for tools after %d model steps (RILL_MAX_TOOL_STEPS)",
                        self.step)
            return EXCEEDED, ("error", errors.ToolStepsExceeded().to_dict())
        return RUN, ("done", dict(done))

    def run(self, record: Callable[[list[Event]], bool]) -> UpstreamStream | None:
        """Run the step's calls in parallel, hand their ``tool_result`` events to ``record``
        (in call order; it returns False once the answer has ended) and open the next step.

        Blocks (a greenlet or thread, never gevent's hub). Returns the next step's stream,
        or ``None`` if :meth:`cancel` stopped it. Raises what the upstream's ``open`` raises
        (:class:`~rill.errors.UpstreamError`).
        """
        calls = self._calls
        pending: list[ToolRun | ToolResult] = []
        try:
            for call in calls:
                pending.append(ToolResult(call.id, call.name, False, call.refusal, 0.0)
                               if call.refusal is not None else self.registry.start(
                                   ToolCall(call.id, call.name, call.arguments),
                                   self.user, self.app))
            self._runs = [run for run in pending if isinstance(run, ToolRun)]
            if self._cancelled:
                return None
            results = [run if isinstance(run, ToolResult) else run.wait() for run in pending]
        finally:
            for run in self._runs:
                run.cancel()  # nothing, unless this step is stopped (a kill, a cancel)
            self._runs = []
        if self._cancelled:
            return None
        for result in results:
            metrics.TOOL_CALLS.labels(result.name if self.registry.get(result.name)
                                      else "(unknown)", "ok" if result.ok else "failed").inc()
        if not record([("tool_result", result.to_dict()) for result in results]):
            return None
        assistant = {"role": "assistant", "content": "".join(self._text) or None,
                     "tool_calls": [{"id": c.id, "type": "function", "function": {
                         "name": c.name, "arguments": c.arguments}} for c in calls]}
        self.request = replace(
            self.request, first_call=self.request.first_call + len(calls),
            messages=[*self.request.messages, assistant, *(r.message() for r in results)])
        self.step += 1
        self._text, self._calls = [], []
        stream = self.upstream.open(self.request)
        if self._cancelled:
            stream.close()
            return None
        return stream

    def cancel(self) -> None:
        """Stop the step: cancel its tool runs (from any greenlet, thread or hub callback);
        :meth:`run` then returns ``None``. Idempotent."""
        self._cancelled = True
        for run in list(self._runs):
            run.cancel()


def _add_usage(total: dict[str, Any] | None, usage: Any, first: bool) -> dict[str, Any] | None:
    """Usage summed over steps, key by key; null once a step reported none."""
    if not isinstance(usage, dict) or (total is None and not first):
        return None
    if total is None:
        return dict(usage)
    return {key: (value + usage[key] if isinstance(value, int) and isinstance(usage.get(key),
                                                                                int) else None)
            for key, value in total.items()}
