"""One generation's policy, whatever runs it: its events, deadlines, ending and summary.

:class:`Generation` decides; a producer (:mod:`rill.producers`) only drives it. It numbers
the upstream's events and appends them to the hub (merging runs of tokens read together),
writes ``start`` first and exactly one terminal event (``done`` or ``error``) last, counts
tokens, and says when the generation must end: a stop asked for (a shutdown), the length
limit (``timeout``), a stall (``upstream_stalled``), a cancel, or an orphan past
``RILL_ORPHAN_GRACE_SECONDS``. Every hub call it makes returns without waiting (both hubs
append to this worker's memory), so a producer may call it from an event-loop callback.

Event contract (ids count from 0): ``start`` ``{"stream_id", "model"}``; ``delta`` and
``reasoning`` ``{"content"}``; ``tool_call`` ``{"index", "id", "name", "arguments"}`` (the
first event of each call with its ``id`` and ``name``, later ones with them null: see
:mod:`rill.upstreams.tool_calls`); ``tool_result`` ``{"id", "name", "ok", "content",
"elapsed_ms"}`` (server-side tools); then ``done`` ``{"finish_reason", "usage"}`` or
``error`` ``{"code", "message"}``.

With server-side tools (:mod:`rill.steps`) a step ending in server tool calls leaves it
``between_steps`` (no stall deadline: tools have their own) until the producer's task gets
the next step's stream from :meth:`Generation.next_step`; every other rule holds across steps.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import errors, metrics
from .hub import TERMINAL, Hub, Record
from .sse import encode_json_event
from .upstreams import Event, UpstreamStream

if TYPE_CHECKING:
    from .steps import ToolSteps

log = logging.getLogger(__name__)

# A generation is not orphaned before its first subscriber had time to join (seconds).
STARTUP_SECONDS = 5.0
CANCELLED: Event = ("done", {"finish_reason": "cancelled", "usage": None})


@dataclass(frozen=True)
class Limits:
    """Times in seconds."""

    stall_timeout: float
    max_seconds: float
    orphan_grace: float


@dataclass(frozen=True)
class Ending:
    """Why a generation must end now: ``error`` None is a cancel (``done`` ``cancelled``)."""

    error: errors.RillError | None = None

    def event(self) -> Event:
        return CANCELLED if self.error is None else ("error", self.error.to_dict())


class Generation:
    """Runs ``stream_id`` in ``hub``; ``on_finish`` runs once, when :meth:`close` is called.

    Raises nothing from its methods but what the hub raises (:class:`errors.HubUnavailable`
    from :meth:`due` once the hub lost the stream).
    """

    def __init__(self, hub: Hub, stream_id: str, start: dict[str, Any], limits: Limits,
                 on_finish: Callable[[], None] = lambda: None,
                 log_fields: Mapping[str, Any] | None = None,
                 steps: ToolSteps | None = None) -> None:
        self.hub, self.stream_id, self.limits = hub, stream_id, limits
        self.steps = steps  # server-side tool steps, if the user is offered any
        self.between_steps = False  # a step ended with server tool calls: see next_step
        self.next_id = 0
        self.finished = False  # the terminal event is written
        self._start_event = start
        self._on_finish = on_finish
        self._log_fields = dict(log_fields or {})
        self._stop_request: Ending | None = None
        self._signalled = False  # a cancel or a leave may concern this stream
        self._had_subscriber = False
        self._orphaned_at: float | None = None
        self._started = self.last_chunk_at = time.monotonic()
        self._first_token_at: float | None = None
        self._tokens = 0
        self._outcome = "internal"
        self._active = self._closed = False
        # Set when the generation is being stopped on purpose: what the upstream does then
        # (its read breaks as it is closed) is not its answer.
        self.stopping = False

    def open(self) -> None:
        """Write ``start``; from then on the generation counts in ``rill_active_streams``."""
        self._append([("start", self._start_event)])
        metrics.ACTIVE.inc()
        self._active = True

    def take(self, events: list[Event]) -> None:
        """Append events read together from the upstream (one read of its socket)."""
        if self.stopping or self.between_steps:
            return
        self._tokens += sum(1 for kind, _ in events if kind in ("delta", "tool_call"))
        self.last_chunk_at = time.monotonic()
        if self.steps is not None and events:
            self.steps.gather(events)
            if events[-1][0] == "done":
                what, last = self.steps.finish(events[-1][1])
                self.between_steps = what == "run"
                events = events[:-1] if self.between_steps else [*events[:-1], last]
        self._append(events)

    def next_step(self) -> UpstreamStream | None:
        """Between steps: run the tools, write their ``tool_result`` events and open the
        next model step (:meth:`rill.steps.ToolSteps.run`). Blocks: call it in a task, never
        in gevent's hub. Returns the next step's stream (the stall deadline counts from
        now), or ``None`` if the generation ended meanwhile. Raises what the upstream's
        ``open`` raises."""
        assert self.steps is not None and self.between_steps
        stream = self.steps.run(self._record)
        if stream is not None:
            self.last_chunk_at = time.monotonic()
            self.between_steps = False
        return stream

    def _record(self, events: list[Event]) -> bool:
        if self.stopping or self.finished:
            return False
        self._append(events)
        return True

    def halt(self) -> None:
        """Ignore what the upstream does from now on (it is being stopped on purpose), and
        stop a tool step."""
        self.stopping = True
        if self.steps is not None:
            self.steps.cancel()

    def fail(self, exc: BaseException) -> None:
        """End with ``exc`` (an upstream's error, or anything else as ``internal``)."""
        if self.stopping:
            return
        if not isinstance(exc, errors.RillError):
            log.error("stream %s: the upstream reader failed", self.stream_id[:6],
                      exc_info=exc)
            exc = errors.RillError()
        self.end(Ending(exc))

    def end(self, ending: Ending) -> None:
        """Write the terminal event for ``ending``, unless one is written already; a tool
        step stops."""
        if self.steps is not None:
            self.steps.cancel()
        if not self.finished:
            self._append([ending.event()])

    def signal(self) -> None:
        """A cancel or a leave may concern this stream: :meth:`due` asks the hub next."""
        self._signalled = True

    def request_stop(self, error: errors.RillError | None = None) -> None:
        """Ask the generation to end (from any greenlet or thread) at the next :meth:`due`."""
        self._stop_request = Ending(error)

    def due(self, now: float) -> Ending | None:
        """What must end the generation now, if anything.

        The hub is asked (it answers from this worker's memory) only on a signal, once at
        ``STARTUP_SECONDS`` if nobody joined, and when an orphan's grace is up. A stream is
        orphaned once it had a subscriber (a leave signal proves one) and has none; the grace
        counts from the last signal that found none (the last leave), since a resume that
        joined in between (a join sends no signal) and left again is a new orphan.
        """
        limits = self.limits
        if self._stop_request is not None:
            return self._stop_request
        if now - self._started >= limits.max_seconds:
            return Ending(errors.StreamTimeout())
        if not self.between_steps and now - self.last_chunk_at >= limits.stall_timeout:
            return Ending(errors.UpstreamStalled())
        orphaned_at, signalled = self._orphaned_at, self._signalled
        if not (signalled or (not self._had_subscriber
                              and now - self._started >= STARTUP_SECONDS)
                or (orphaned_at is not None and now - orphaned_at >= limits.orphan_grace)):
            return None
        self._signalled = False
        if self.hub.cancel_requested(self.stream_id):
            return Ending()
        if self.hub.subscribers(self.stream_id) > 0:
            self._had_subscriber, self._orphaned_at = True, None
            return None
        self._had_subscriber = True
        if signalled or orphaned_at is None:
            self._orphaned_at = orphaned_at = now
        if now - orphaned_at >= limits.orphan_grace:
            log.info("stream %s: no subscriber for %.0f s; cancelling", self.stream_id[:6],
                     limits.orphan_grace)
            return Ending()
        return None

    def wait_for(self, now: float) -> float:
        """Seconds until :meth:`due` may have something to say, without a signal."""
        limits = self.limits
        deadlines = [self._started + limits.max_seconds]
        if not self.between_steps:
            deadlines.append(self.last_chunk_at + limits.stall_timeout)
        if not self._had_subscriber:
            deadlines.append(self._started + STARTUP_SECONDS)
        if self._orphaned_at is not None:
            deadlines.append(self._orphaned_at + limits.orphan_grace)
        return max(min(deadlines) - now, 0.0)

    def close(self) -> None:
        """Leave ``rill_active_streams``, count the ended generation in the metrics, log
        its summary line (no prompt) and run ``on_finish`` (which releases its slot); once.

        ``on_finish`` runs whatever the metrics or the log raise; what they raise is logged
        (if the log can) and not raised.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._active:
                self._active = False
                metrics.ACTIVE.dec()
            self._account()
        except Exception:
            with contextlib.suppress(Exception):
                log.exception("stream %s: counting its end failed", self.stream_id[:6])
        finally:
            self._on_finish()

    def _account(self) -> None:
        duration = time.monotonic() - self._started
        ttft = (None if self._first_token_at is None
                else self._first_token_at - self._started)
        metrics.STREAMS.labels(self._outcome).inc()
        metrics.TOKENS.inc(self._tokens)
        metrics.DURATION.observe(duration)
        if ttft is not None:
            metrics.TTFT.observe(ttft)
        if self._outcome.startswith("upstream_"):
            metrics.UPSTREAM_ERRORS.labels(self._outcome).inc()
        log.info("stream %s ended: %s", self.stream_id[:6], self._outcome, extra={
            **self._log_fields, "event": "stream_end", "stream_id": self.stream_id,
            "outcome": self._outcome, "model": self._start_event.get("model"),
            "tokens": self._tokens, "ttft_ms": None if ttft is None else round(ttft * 1000, 1),
            "duration_ms": round(duration * 1000, 1)})

    def _append(self, events: list[Event]) -> None:
        if self.finished:
            return
        records = _merge(events, self.next_id)
        if not records:
            return
        self.next_id = records[-1][0] + 1
        last = records[-1]
        if last[1] in TERMINAL:
            self.finished = True  # first: whatever the hub does, nothing follows a terminal
            self._outcome = metrics.outcome(last[1], last[2])
            usage = last[2].get("usage") if last[1] == "done" else None
            claimed = usage.get("completion_tokens") if isinstance(usage, dict) else None
            if type(claimed) is int and claimed >= 0:  # else the deltas counted stand
                self._tokens = claimed
        self.hub.append(self.stream_id, records)
        if self._first_token_at is None and any(r[1] in ("delta", "reasoning", "tool_call")
                                                for r in records):
            self._first_token_at = time.monotonic()


def _merge(events: list[Event], next_id: int) -> list[Record]:
    """Number ``events`` from ``next_id``, merging runs of same-kind text events, and a
    ``tool_call`` fragment into the one before it of the same call (which keeps its ``id``
    and ``name``: the merged event is still the call's first, or a later one); nothing after
    a terminal event."""
    records: list[Record] = []
    for kind, payload in events:
        last = records[-1] if records else None
        if last is not None and last[1] == kind and kind in ("delta", "reasoning"):
            records[-1] = (last[0], kind, {"content": last[2]["content"] + payload["content"]})
        elif (last is not None and last[1] == kind == "tool_call" and payload["id"] is None
              and last[2]["index"] == payload["index"]):
            arguments = last[2]["arguments"] + payload["arguments"]
            records[-1] = (last[0], kind, {**last[2], "arguments": arguments})
        else:
            records.append((next_id + len(records), kind, payload))
        if kind in TERMINAL:
            break
    return records


def encode_records(records: list[Record]) -> bytes:
    """Frame records as SSE, ids included."""
    return b"".join(encode_json_event(kind, payload, id_) for id_, kind, payload in records)
