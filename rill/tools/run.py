"""One tool call run for one user: validated, in its own task, bounded in time and size.

A :class:`ToolRun` runs in a greenlet under gevent and in a daemon thread otherwise (a
gthread or sync worker, ``flask run``), as :mod:`rill.tasks` decides for every background
task. Inside it: the host app's app context, with the user id in ``flask.g.rill_user`` (so
:func:`rill.auth.current_user` answers there); no request context, since the request that
asked may have ended while the answer goes on. Then the tool's ``allow`` predicate, the
arguments JSON validated against the tool's model, and the call.

Every way a run ends is a :class:`ToolResult` the model can read and act on (``ok: false``
with a short ``content`` saying what went wrong), decided exactly once, whichever comes
first: the tool's return, the deadline (:meth:`ToolRun.wait`) or :meth:`ToolRun.cancel`.
A tool's exception is logged with its traceback redacted (:func:`rill.logs.redact`) and
reaches the model only as its class name; :class:`ToolFailure` is the way for a tool to
tell the model something went wrong in its own words.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
import pydantic_core
from flask import Flask, g

from .. import logs, tasks
from .schema import NAME, Tool

log = logging.getLogger(__name__)
KILL_WAIT_SECONDS = 1.0  # how long a cancel waits for a killed greenlet's cleanup


class ToolFailure(Exception):
    """Raise it in a tool to fail with a message meant for the model: ``str(exc)`` becomes
    the ``ok: false`` result's content (bounded), unlike any other exception's text."""


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: ``arguments`` is the JSON text it wrote ("" means ``{}``)."""

    id: str
    name: str
    arguments: str = ""

    @classmethod
    def from_openai(cls, call: Mapping[str, Any]) -> ToolCall:
        """From an assistant message's ``tool_calls`` item (OpenAI chat completions):
        ``{"id", "type": "function", "function": {"name", "arguments"}}``."""
        function = call.get("function") or {}
        return cls(str(call.get("id") or ""), str(function.get("name") or ""),
                   str(function.get("arguments") or ""))


@dataclass(frozen=True)
class ToolResult:
    """How a call ended: ``content`` is what the model gets (at most
    ``RILL_TOOL_RESULT_MAX_BYTES`` UTF-8 bytes); ``elapsed_ms`` from start to decision."""

    id: str
    name: str
    ok: bool
    content: str
    elapsed_ms: float

    def to_dict(self) -> dict[str, Any]:
        """The ``tool_result`` event's data: ``{"id", "name", "ok", "content",
        "elapsed_ms"}``."""
        return {"id": self.id, "name": self.name, "ok": self.ok, "content": self.content,
                "elapsed_ms": self.elapsed_ms}

    def message(self) -> dict[str, Any]:
        """The ``role: "tool"`` message that gives this result to the model (OpenAI chat
        completions)."""
        return {"role": "tool", "tool_call_id": self.id, "content": self.content}


class ToolRun:
    """``call`` of ``tool`` (None: no such tool for this user, refused at once) for ``user``
    in ``app``, started on creation. ``timeout`` in seconds; ``max_bytes`` bounds the
    content of the result.

    A run ends by its deadline whether or not anyone waits: a watchdog task (greenlet or
    thread, like the tool's) stops it then. ``on_done(result)``, if given, is called once
    with the result by whatever decided it: the tool's task, the watchdog, or the caller of
    :meth:`cancel` (for an unknown tool, before the constructor returns). It must not block.
    """

    def __init__(self, call: ToolCall, tool: Tool | None, user: str | None, app: Flask, *,
                 timeout: float, max_bytes: int,
                 on_done: Callable[[ToolResult], None] | None = None) -> None:
        self.call, self.tool, self.user, self.app = call, tool, user, app
        self.max_bytes, self.on_done = max_bytes, on_done
        self.result: ToolResult | None = None  # set once, by whatever ends the run first
        self._lock = threading.Lock()
        self._done = tasks.event()
        self._started = time.monotonic()
        self.deadline = self._started + timeout
        self._task: tasks.Task | None = None
        if tool is None:
            self._decide(False, f"No tool named {_shown(call.name)} is available.")
        else:
            self._task = tasks.spawn(self._work)
            tasks.spawn(self._watch)

    @property
    def done(self) -> bool:
        return self.result is not None

    def wait(self) -> ToolResult:
        """Block this greenlet (or thread; never gevent's hub) until the result: by the
        deadline at the latest, when the tool is stopped and the result says it timed
        out."""
        self._watch()
        assert self.result is not None
        return self.result

    def cancel(self) -> None:
        """Stop the run now (idempotent; from any greenlet or thread, or a callback in
        gevent's hub, where the kill is scheduled rather than awaited). A greenlet is
        killed; a thread cannot be: it is abandoned, and what it returns later is dropped."""
        self._end(False, "The tool call was cancelled.")

    def _watch(self) -> None:
        if self._done.wait(max(0.0, self.deadline - time.monotonic())):
            return
        seconds = self.deadline - self._started
        if self._end(False, f"The tool {self.call.name} did not finish within {seconds:g} s."):
            log.warning("tool %s (call %r) timed out after %g s", self.call.name,
                        self.call.id, seconds)
        else:  # the tool returned, or a cancel is stopping it: its result is moments away
            self._done.wait()

    def _end(self, ok: bool, content: str) -> bool:
        """Decide the result and stop the tool, then publish the result (so whoever reads
        it knows a greenlet is gone); True if this call decided it."""
        if not self._claim(ok, content):
            return False
        if self._task is not None and not self._task.kill(KILL_WAIT_SECONDS):
            log.warning("tool %s (call %r) runs on in its thread; its result will be dropped",
                        self.call.name, self.call.id)
        self._publish()
        return True

    def _decide(self, ok: bool, content: str) -> bool:
        """Set and publish the result unless one is set; True if this call set it."""
        if not self._claim(ok, content):
            return False
        self._publish()
        return True

    def _claim(self, ok: bool, content: str) -> bool:
        with self._lock:
            if self.result is not None:
                return False
            elapsed = round((time.monotonic() - self._started) * 1000, 1)
            self.result = ToolResult(self.call.id, self.call.name, ok,
                                     bound(content, self.max_bytes), elapsed)
            return True

    def _publish(self) -> None:
        result = self.result
        assert result is not None
        self._done.set()
        if self.on_done is not None:
            try:
                self.on_done(result)
            except Exception:
                log.exception("tool %s (call %r): on_done failed", self.call.name,
                              self.call.id)

    def _work(self) -> None:
        try:
            with self.app.app_context():
                g.rill_user = self.user
                ok, content = self._outcome()
        except Exception as exc:  # the app context's own teardown failed
            ok, content = False, self._failed(exc)
        self._decide(ok, content)

    def _outcome(self) -> tuple[bool, str]:
        tool, call = self.tool, self.call
        assert tool is not None
        if not tool.permits(self.user):  # same words as an unknown tool: no oracle
            return False, f"No tool named {_shown(call.name)} is available."
        try:
            arguments = tool.arguments.model_validate_json(call.arguments.strip() or "{}")
        except pydantic.ValidationError as exc:
            return False, invalid_arguments(tool.name, exc)
        try:
            value = tool.function(**dict(arguments))
        except ToolFailure as exc:
            return False, str(exc) or f"The tool {tool.name} failed."
        except (Exception, SystemExit) as exc:  # SystemExit would end a gevent worker
            return False, self._failed(exc)
        if isinstance(value, str):
            return True, value
        try:
            return True, pydantic_core.to_json(value).decode()
        except pydantic_core.PydanticSerializationError:
            log.warning("tool %s (call %r) returned a %s, which is not JSON", tool.name,
                        call.id, type(value).__name__)
            return False, f"The tool {tool.name} returned a result that is not JSON."

    def _failed(self, exc: BaseException) -> str:
        """Log ``exc`` redacted; return the words the model gets (its class name only)."""
        log.warning("tool %s (call %r) raised %s\n%s", self.call.name, self.call.id,
                    type(exc).__name__, logs.redact("".join(traceback.format_exception(exc))))
        return f"The tool {self.call.name} failed ({type(exc).__name__})."


def invalid_arguments(name: str, exc: pydantic.ValidationError) -> str:
    """A short message naming each bad argument, without echoing the input."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        if error["type"] == "json_invalid":
            return f"The arguments for {name} are not valid JSON."
        where = ".".join(str(part) for part in error["loc"]) or "arguments"
        problems.append(f"{where}: {error['msg']}")
    return f"Invalid arguments for {name}: " + "; ".join(problems)


def bound(content: str, max_bytes: int) -> str:
    """``content`` if it fits in ``max_bytes`` UTF-8 bytes; else its head, cut at a
    character boundary, and a mark saying how long it was, together within ``max_bytes``
    (unless the mark alone is longer)."""
    data = content.encode()
    if len(data) <= max_bytes:
        return content
    mark = f"\n[truncated: the tool's result was {len(data)} bytes]"
    keep = max(0, max_bytes - len(mark.encode()))
    return data[:keep].decode(errors="ignore") + mark


def _shown(name: str) -> str:
    """A tool name fit to repeat to the model: the model's own text only if it is a name."""
    return repr(name) if NAME.fullmatch(name) else "like that"
