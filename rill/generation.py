"""The producer: one generation, writing into the stream hub.

With the memory hub under gevent and an upstream that can be read without waiting, a
generation has no greenlet of its own (:class:`EventedProducer`: libev watchers on its
socket and a timer). Otherwise (:class:`Producer`) a reader greenlet (a thread without
gevent) reads the upstream a batch at a time (the events of one read of its
socket) and merges runs of tokens that arrived together into one event, so a busy worker
gets fewer, larger events. With the memory hub it appends them itself; with Redis it hands
them to the supervisor greenlet, which flushes what gathered during each round trip. The
supervisor also renews the stream's lease, and ends the generation on a
cancel, an orphan past ``RILL_ORPHAN_GRACE_SECONDS``, a stall, or the length limit. Stopping
kills the reader, whose ``finally`` closes the upstream request at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import gevent

from . import errors, metrics, tasks
from .hub import TERMINAL, Hub, Record
from .sse import encode_json_event
from .upstreams import DRAIN_SECONDS, Event, NonBlockingStream, UpstreamStream, batches_of

log = logging.getLogger(__name__)

YIELD_EVERY = 64  # upstream events read before the reader lets other greenlets run (a
# read that finds data waiting does not switch, so a fast upstream would starve the rest)
# A generation is not orphaned before its first subscriber had time to join (seconds).
STARTUP_SECONDS = 5.0


@dataclass(frozen=True)
class Limits:
    """Times in seconds."""

    stall_timeout: float
    max_seconds: float
    orphan_grace: float
    lease: float


class Producer:
    """Runs ``upstream`` into ``hub`` as ``stream_id``; ``on_finish`` runs once at the end."""

    def __init__(self, hub: Hub, stream_id: str, upstream: UpstreamStream,
                 start: dict[str, Any], limits: Limits,
                 on_finish: Callable[[], None] = lambda: None,
                 log_fields: Mapping[str, Any] | None = None) -> None:
        self.hub, self.stream_id, self.limits = hub, stream_id, limits
        self.next_id = 0
        self.finished = False
        self.wake = tasks.event()
        self._pending: list[Event] = []
        self._upstream = upstream
        # One iterator: the drain must continue the same read.
        self._batches = iter(batches_of(upstream))
        # The reader appends to the hub itself, one append per read of the upstream, when
        # that never blocks (the memory hub under gevent): no supervisor wake per token.
        self._direct = tasks.cooperative() and hub.appends_in_place
        self._on_finish = on_finish
        self._model = start.get("model")
        self._log_fields = dict(log_fields or {})
        self._stop_request: tuple[errors.RillError | None] | None = None
        self._signalled = False  # a cancel or a leave may concern this stream
        self._had_subscriber = False
        self._started = self.last_chunk_at = time.monotonic()
        self._first_token_at: float | None = None
        self._tokens = 0
        self._outcome = "internal"
        metrics.ACTIVE.inc()
        self._flush([("start", start)])
        self._start()

    def _start(self) -> None:
        self._reader = tasks.spawn(self._read)
        self._supervisor = tasks.spawn(self._supervise)

    def _read(self) -> None:
        try:
            self._read_events()
            # After done: read the body to its end so the connection returns to the pool.
            for _ in self._batches:
                pass
        except Exception:
            pass  # the answer is complete; only the connection's reuse is lost
        finally:
            self._upstream.close()

    def _read_events(self) -> None:
        read = 0
        try:
            for batch in self._batches:
                self._tokens += sum(1 for kind, _ in batch if kind == "delta")
                self.last_chunk_at = time.monotonic()
                self._take(batch)
                if batch[-1][0] in TERMINAL:
                    return
                read += len(batch)
                if read >= YIELD_EVERY:
                    read = 0
                    tasks.pause()
            self._take([("error", errors.UpstreamCut().to_dict())])
        except errors.RillError as exc:
            self._take([("error", exc.to_dict())])
        except Exception:
            log.exception("the upstream reader failed")
            self._take([("error", errors.RillError().to_dict())])
        finally:
            self.wake.set()

    def _take(self, batch: list[Event]) -> None:
        """Pass events read together on: straight into the hub when appending cannot
        switch greenlets (so a kill never interrupts it), else to the supervisor."""
        if self._direct:
            self._flush(batch)
        else:
            self._pending.extend(batch)
            self.wake.set()

    def _supervise(self) -> None:
        orphaned_at: float | None = None
        renewed = checked = time.monotonic()
        try:
            while not self.finished:
                now = time.monotonic()
                self.wake.wait(self._timeout(now, orphaned_at))
                self.wake.clear()
                if self._pending:
                    batch, self._pending = self._pending, []
                    self._flush(batch)
                    if self.finished:
                        break
                now = time.monotonic()
                if self._stop_request is not None:
                    self._stop(*self._stop_request)
                    break
                # The hub is asked (a round trip with Redis) on a signal, each lease tick, or
                # when an orphan's grace is up; never per token. A hub without leases (memory)
                # delivers every cancel and leave as a signal, so it is asked once at startup
                # and then only on signals.
                leased = self.hub.leased
                ask_hub = (self._signalled
                           or (now - checked >= self.limits.lease / 3 if leased else
                               not self._had_subscriber
                               and now - self._started >= STARTUP_SECONDS)
                           or (orphaned_at is not None
                               and now - orphaned_at >= self.limits.orphan_grace))
                signalled = self._signalled
                if ask_hub:
                    self._signalled, checked = False, now
                orphaned_at = self._check(now, orphaned_at, ask_hub, signalled)
                if leased and now - renewed >= self.limits.lease / 3:
                    self.hub.renew([self.stream_id])
                    renewed = now
        except errors.HubUnavailable as exc:
            log.warning("stream %s: the hub is unreachable (%r); stopping its generation",
                        self.stream_id[:6], exc.__cause__)
            self._reader.stop(unblock=self._upstream.close)
        except Exception:
            log.exception("stream %s: the supervisor failed", self.stream_id[:6])
            self._reader.stop(unblock=self._upstream.close)
        finally:
            self.finished = True
            self._record()
            self._on_finish()

    def _record(self) -> None:
        """Count the ended generation in the metrics and log its summary line (no prompt)."""
        duration = time.monotonic() - self._started
        ttft = (None if self._first_token_at is None
                else self._first_token_at - self._started)
        metrics.ACTIVE.dec()
        metrics.STREAMS.labels(self._outcome).inc()
        metrics.TOKENS.inc(self._tokens)
        metrics.DURATION.observe(duration)
        if ttft is not None:
            metrics.TTFT.observe(ttft)
        if self._outcome.startswith("upstream_"):
            metrics.UPSTREAM_ERRORS.labels(self._outcome).inc()
        log.info("stream %s ended: %s", self.stream_id[:6], self._outcome, extra={
            **self._log_fields, "event": "stream_end", "stream_id": self.stream_id,
            "outcome": self._outcome, "model": self._model, "tokens": self._tokens,
            "ttft_ms": None if ttft is None else round(ttft * 1000, 1),
            "duration_ms": round(duration * 1000, 1)})

    def _timeout(self, now: float, orphaned_at: float | None) -> float:
        limits = self.limits
        deadlines = [self._started + limits.max_seconds,
                     self.last_chunk_at + limits.stall_timeout]
        if self.hub.leased:
            deadlines.append(now + limits.lease / 3)
        elif not self._had_subscriber:
            deadlines.append(self._started + STARTUP_SECONDS)
        if orphaned_at is not None:
            deadlines.append(orphaned_at + limits.orphan_grace)
        return max(min(deadlines) - now, 0.0)

    def _check(self, now: float, orphaned_at: float | None, ask_hub: bool,
               signalled: bool = False) -> float | None:
        """Stop the generation when it must end; return when it was orphaned, if it is.

        A stream counts as orphaned once it had a subscriber (a leave signal proves one),
        or after ``STARTUP_SECONDS`` without any.
        """
        hub, stream_id = self.hub, self.stream_id
        if now - self._started >= self.limits.max_seconds:
            self._stop(errors.StreamTimeout())
        elif now - self.last_chunk_at >= self.limits.stall_timeout:
            self._stop(errors.UpstreamStalled())
        elif not ask_hub:
            return orphaned_at
        elif hub.cancel_requested(stream_id):
            self._stop()
        elif hub.subscribers(stream_id) > 0:
            self._had_subscriber = True
        elif signalled or self._had_subscriber or now - self._started >= STARTUP_SECONDS:
            self._had_subscriber = True
            orphaned_at = orphaned_at or now
            if now - orphaned_at >= self.limits.orphan_grace:
                log.info("stream %s: no subscriber for %.0f s; cancelling", stream_id[:6],
                         self.limits.orphan_grace)
                self._stop()
            return orphaned_at
        return None

    def signal(self) -> None:
        """Say that a cancel or a leave may concern this stream: the hub is asked at once."""
        self._signalled = True
        self.wake.set()

    def stop(self, error: errors.RillError | None = None) -> None:
        """Ask the generation to end now (from any greenlet); see :meth:`_stop`."""
        self._stop_request = (error,)
        self.wake.set()

    def _stop(self, error: errors.RillError | None = None) -> None:
        """End the generation: close the upstream, then write the terminal event.

        ``error`` None means a cancel (``done`` with ``finish_reason: "cancelled"``).
        """
        if self.finished:
            return
        self._reader.stop(unblock=self._upstream.close)
        pending, self._pending = self._pending, []
        pending = [e for e in pending if e[0] not in TERMINAL]
        terminal: Event = (("done", {"finish_reason": "cancelled", "usage": None})
                           if error is None else ("error", error.to_dict()))
        self._flush([*pending, terminal])

    def _flush(self, events: list[Event]) -> None:
        records = _merge(events, self.next_id)
        if not records:
            return
        self.next_id = records[-1][0] + 1
        self.hub.append(self.stream_id, records)
        if self._first_token_at is None and any(r[1] in ("delta", "reasoning")
                                                for r in records):
            self._first_token_at = time.monotonic()
        last = records[-1]
        if last[1] in TERMINAL:
            self.finished = True
            self._outcome = metrics.outcome(last[1], last[2])
            usage = last[2].get("usage") if last[1] == "done" else None
            if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
                self._tokens = usage["completion_tokens"]


class EventedProducer(Producer):
    """The same generation with no greenlet of its own, for the memory hub under gevent.

    A libev read watcher on the upstream's socket calls :meth:`_on_readable` in gevent's hub
    when bytes arrive, which reads them without waiting and appends their events; a libev
    timer (re-armed at the next deadline) and hub callbacks (for signals and stops) run the
    supervisor's checks. Nothing here may block, which holds because the memory hub's calls
    and closing the upstream never do. Per stream this saves the reader's and the
    supervisor's greenlets (their spawn, saved stacks, and a switch and an extra ``recv`` per
    upstream read). Needs an upstream stream with ``fileno()`` and ``read_nowait()``
    (:class:`~rill.upstreams.openai_compat.OpenAIStream` over Rill's transport).
    """

    def _start(self) -> None:
        self._loop = gevent.get_hub().loop
        self._orphaned_at: float | None = None
        self._recorded = False
        self._timer: Any = None
        self._stream = cast(NonBlockingStream, self._upstream)
        self._io: Any = self._loop.io(self._stream.fileno(), 1)  # 1: readable
        self._io.start(self._guard, self._on_readable)
        self._loop.run_callback(self._guard, self._on_readable)  # bytes read with the head
        self._arm(self._timeout(self._started, None))

    def _guard(self, step: Callable[[], None]) -> None:
        """Run ``step`` in the hub: an exception ends the generation, never the hub."""
        try:
            step()
        except Exception as exc:
            if not isinstance(exc, errors.RillError):
                log.exception("stream %s: the producer failed", self.stream_id[:6])
            self._close_upstream()
            if not self.finished:
                error = exc if isinstance(exc, errors.RillError) else errors.RillError()
                with contextlib.suppress(Exception):
                    self._flush([("error", error.to_dict())])
            self.finished = True
            self._finish()

    def _arm(self, delay: float, step: Callable[[], None] | None = None) -> None:
        if self._timer is not None:
            self._timer.close()
        self._timer = self._loop.timer(delay)
        self._timer.start(self._guard, step or self._on_timer)

    def _on_readable(self) -> None:
        events = self._stream.read_nowait()
        if events is None:
            return
        if self.finished:  # reading past the end, for the connection's reuse
            if self._stream.body_ended:
                self._close_upstream()
            return
        if events:
            self._tokens += sum(1 for kind, _ in events if kind == "delta")
            self.last_chunk_at = time.monotonic()
            self._flush(events)
            if self.finished:
                if self._stream.body_ended:
                    self._close_upstream()
                else:  # the rest of the body (the chunked terminator) may take a moment
                    self._arm(DRAIN_SECONDS, self._close_upstream)
                self._finish()

    def _on_timer(self) -> None:
        now = time.monotonic()
        if self.finished:
            return
        if self._stop_request is not None:
            self._stop(*self._stop_request)
            return
        signalled, self._signalled = self._signalled, False
        orphaned_at = self._orphaned_at
        ask_hub = (signalled or (not self._had_subscriber
                                 and now - self._started >= STARTUP_SECONDS)
                   or (orphaned_at is not None
                       and now - orphaned_at >= self.limits.orphan_grace))
        self._orphaned_at = self._check(now, orphaned_at, ask_hub, signalled)
        if not self.finished:
            self._arm(self._timeout(now, self._orphaned_at))

    def signal(self) -> None:
        self._signalled = True
        self._loop.run_callback(self._guard, self._on_timer)

    def stop(self, error: errors.RillError | None = None) -> None:
        self._stop_request = (error,)
        self._loop.run_callback(self._guard, self._on_timer)

    def _stop(self, error: errors.RillError | None = None) -> None:
        if self.finished:
            return
        self._close_upstream()
        self._flush([("done", {"finish_reason": "cancelled", "usage": None})
                     if error is None else ("error", error.to_dict())])
        self._finish()

    def _close_upstream(self) -> None:
        io, self._io = self._io, None
        if io is not None:
            io.stop()
            io.close()
            self._upstream.close()

    def _finish(self) -> None:
        if self._recorded:
            return
        self._recorded = True
        if self._io is None and self._timer is not None:
            self._timer.close()
        self._record()
        self._on_finish()


def start(hub: Hub, stream_id: str, upstream: UpstreamStream, start: dict[str, Any],
          limits: Limits, on_finish: Callable[[], None] = lambda: None,
          log_fields: Mapping[str, Any] | None = None) -> Producer:
    """Start the generation: evented when the hub and the upstream allow, else in greenlets
    (or threads, in a worker without gevent)."""
    fileno = getattr(upstream, "fileno", None)
    evented = (tasks.cooperative() and hub.appends_in_place and fileno is not None
               and fileno() is not None)
    kind = EventedProducer if evented else Producer
    return kind(hub, stream_id, upstream, start, limits, on_finish, log_fields)


def _merge(events: list[Event], next_id: int) -> list[Record]:
    """Number ``events`` from ``next_id``, merging runs of same-kind text events."""
    records: list[Record] = []
    for kind, payload in events:
        if (kind in ("delta", "reasoning") and records and records[-1][1] == kind):
            last = records[-1]
            records[-1] = (last[0], kind, {"content": last[2]["content"] + payload["content"]})
        else:
            records.append((next_id + len(records), kind, payload))
        if kind in TERMINAL:
            break
    return records


def encode_records(records: list[Record]) -> bytes:
    """Frame records as SSE, ids included."""
    return b"".join(encode_json_event(kind, payload, id_) for id_, kind, payload in records)
