"""Streams in this worker's memory: the memory hub, and the Redis hub's local fast path.

Each stream is a list of records and a wake-up event (:func:`rill.tasks.event`) that is
replaced whenever records become readable, so one ``set()`` wakes every waiting subscriber and
a new subscriber costs the producer nothing.

Subscribers read only *durable* records. In the memory hub every record is durable when it
is appended. Under the Redis hub (``deferred``) a record becomes durable once Redis holds it
(:meth:`MemoryHub.made_durable`, called by the flusher), so every event a client has seen can
be resumed from on any worker or instance.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from .. import tasks
from ..errors import EventsExpired, HubUnavailable, StreamNotFound
from . import TERMINAL, Record, State

SWEEP_SECONDS = 1.0


class Stream:
    """One stream's records from ``first_id`` on; ``durable_end`` is one past the last id
    subscribers may read, ``sent_end`` one past the last id handed to Redis."""

    __slots__ = ("cancel", "changed", "durable_end", "expires_at", "failed", "finished",
                 "first_id", "owner", "records", "remote", "sent_end", "subscribers")

    def __init__(self, owner: str | None, event: Callable[[], Any]) -> None:
        self.owner = owner
        self.records: list[Record] = []
        self.first_id = self.durable_end = self.sent_end = 0
        self.finished = False  # a terminal record was appended
        self.failed = False  # the hub lost it: subscribers get hub_unavailable
        self.cancel = False
        self.expires_at = float("inf")
        self.subscribers: set[str] = set()
        self.remote: dict[str, float] = {}  # subscribers on other workers: when they lapse
        self.changed = event()

    @property
    def end(self) -> int:
        return self.first_id + len(self.records)

    @property
    def done(self) -> bool:
        """Finished, and all of it durable."""
        return self.finished and self.durable_end == self.end


class MemoryHub:
    """The streams of this worker, in its memory (see the module's docstring)."""

    def __init__(self, config: Mapping[str, Any], *, deferred: bool = False,
                 linger: float | None = None) -> None:
        self.max_events = config["RILL_STREAM_MAX_EVENTS"]
        # How long a finished stream stays readable here (the Redis hub keeps it briefly:
        # Redis has it for the TTL).
        self.ttl = config["RILL_STREAM_TTL_SECONDS"] if linger is None else linger
        self.streams: dict[str, Stream] = {}
        self.deferred = deferred
        # Deferred: called with each stream that has new records (the Redis hub's flusher).
        self.on_append: Callable[[str, Stream], None] = lambda stream_id, stream: None
        # Greenlet or thread events, chosen once: an append must not ask per token.
        self._event = type(tasks.event())
        self._callbacks: list[Callable[[str], None]] = []
        self._swept = 0.0

    def open(self, stream_id: str, owner: str | None) -> None:
        self._sweep()
        self.streams[stream_id] = Stream(owner, self._event)

    def get(self, stream_id: str) -> Stream | None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.expires_at < time.monotonic():
            return None
        return stream

    def _get(self, stream_id: str) -> Stream:
        stream = self.get(stream_id)
        if stream is None:
            raise StreamNotFound()
        return stream

    def append(self, stream_id: str, records: list[Record]) -> None:
        stream = self._get(stream_id)
        if stream.finished or stream.failed:
            return  # a lost stream takes nothing more; its subscribers end hub_unavailable
        stream.records.extend(records)
        if records[-1][1] in TERMINAL:
            stream.finished = True
        if self.deferred:
            self.on_append(stream_id, stream)
        else:
            self.made_durable(stream, stream.end)

    def made_durable(self, stream: Stream, end: int) -> None:
        """Let subscribers read ``stream``'s records before id ``end``, and wake them."""
        stream.durable_end = stream.sent_end = end
        excess = min(len(stream.records) - self.max_events, end - stream.first_id)
        if excess > 0:
            del stream.records[:excess]
            stream.first_id += excess
        if stream.done:
            stream.expires_at = time.monotonic() + self.ttl
        self.wake(stream)

    def fail(self, stream: Stream) -> None:
        """The hub lost ``stream``: its subscribers end with ``hub_unavailable``."""
        stream.failed = True
        stream.expires_at = time.monotonic() + self.ttl
        self.wake(stream)

    def wake(self, stream: Stream) -> None:
        changed, stream.changed = stream.changed, self._event()
        changed.set()

    def append_if_next(self, stream_id: str, record: Record) -> None:
        stream = self._get(stream_id)
        if not stream.finished and record[0] == stream.end:
            self.append(stream_id, [record])

    def read(self, stream_id: str, after: int, timeout: float, count: int) -> list[Record]:
        stream = self._get(stream_id)
        deadline = None  # the clock is read only when there is nothing to read
        while True:
            start = after + 1 - stream.first_id
            if start < 0:
                raise EventsExpired()  # trimmed (perhaps while this subscriber waited)
            end = min(stream.durable_end - stream.first_id, start + count)
            if start < end or stream.failed or stream.done:
                break
            now = time.monotonic()
            deadline = now + timeout if deadline is None else deadline
            if now >= deadline:
                return []
            stream.changed.wait(deadline - now)
        if start >= end and stream.failed:
            raise HubUnavailable()
        return stream.records[start:end]

    def state(self, stream_id: str) -> State:
        return "finished" if self._get(stream_id).done else "live"

    def owner(self, stream_id: str) -> str | None:
        return self._get(stream_id).owner

    def request_cancel(self, stream_id: str) -> None:
        self._get(stream_id).cancel = True
        self.signal(stream_id)

    def cancel_requested(self, stream_id: str) -> bool:
        stream = self._get(stream_id)
        if stream.failed:
            raise HubUnavailable()
        return stream.cancel

    def join(self, stream_id: str, subscriber: str) -> None:
        self._get(stream_id).subscribers.add(subscriber)

    def leave(self, stream_id: str, subscriber: str) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.subscribers.discard(subscriber)
            self.signal(stream_id)

    def subscribers(self, stream_id: str) -> int:
        stream = self._get(stream_id)
        if stream.remote:
            now = time.time()
            for subscriber in [s for s, lapses in stream.remote.items() if lapses < now]:
                del stream.remote[subscriber]
        return len(stream.subscribers) + len(stream.remote)

    def on_signal(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)

    def reachable(self) -> bool:
        return True  # this worker's memory

    def signal(self, stream_id: str) -> None:
        for callback in self._callbacks:
            callback(stream_id)

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept < SWEEP_SECONDS:
            return
        self._swept = now
        for stream_id in [k for k, s in self.streams.items() if s.expires_at < now]:
            del self.streams[stream_id]
