"""The in-memory hub: streams in this worker's memory, for one worker.

Each stream is a list of records and a wake-up event (:func:`rill.tasks.event`) that is replaced
on every append, so one ``set()`` wakes every waiting subscriber and a new subscriber costs
the producer nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from .. import tasks
from ..errors import EventsExpired, StreamNotFound
from . import TERMINAL, Record, State

SWEEP_SECONDS = 1.0


class _Stream:
    __slots__ = ("cancel", "changed", "expires_at", "finished", "first_id", "owner", "records",
                 "subscribers")

    def __init__(self, owner: str | None, event: Callable[[], Any]) -> None:
        self.owner = owner
        self.records: list[Record] = []
        self.first_id = 0
        self.finished = False
        self.cancel = False
        self.expires_at = float("inf")
        self.subscribers: set[str] = set()
        self.changed = event()


class MemoryHub:
    appends_in_place = True
    leased = False

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.max_events = config["RILL_STREAM_MAX_EVENTS"]
        self.ttl = config["RILL_STREAM_TTL_SECONDS"]
        self.streams: dict[str, _Stream] = {}
        # Greenlet or thread events, chosen once: an append must not ask per token.
        self._event = type(tasks.event())
        self._callbacks: list[Callable[[str], None]] = []
        self._swept = 0.0

    def open(self, stream_id: str, owner: str | None) -> None:
        self._sweep()
        self.streams[stream_id] = _Stream(owner, self._event)

    def _get(self, stream_id: str) -> _Stream:
        stream = self.streams.get(stream_id)
        if stream is None or stream.expires_at < time.monotonic():
            raise StreamNotFound()
        return stream

    def append(self, stream_id: str, records: list[Record]) -> None:
        stream = self._get(stream_id)
        stream.records.extend(records)
        excess = len(stream.records) - self.max_events
        if excess > 0:
            del stream.records[:excess]
            stream.first_id += excess
        if records[-1][1] in TERMINAL:
            stream.finished = True
            stream.expires_at = time.monotonic() + self.ttl
        changed, stream.changed = stream.changed, self._event()
        changed.set()

    def append_if_next(self, stream_id: str, record: Record) -> None:
        stream = self._get(stream_id)
        if not stream.finished and record[0] == stream.first_id + len(stream.records):
            self.append(stream_id, [record])

    def read(self, stream_id: str, after: int, timeout: float, count: int) -> list[Record]:
        stream = self._get(stream_id)
        start = after + 1 - stream.first_id
        if start < 0:
            raise EventsExpired()
        if start >= len(stream.records) and not stream.finished:
            stream.changed.wait(timeout)
            start = after + 1 - stream.first_id
        return stream.records[max(start, 0):max(start, 0) + count]

    def state(self, stream_id: str) -> State:
        return "finished" if self._get(stream_id).finished else "live"

    def owner(self, stream_id: str) -> str | None:
        return self._get(stream_id).owner

    def renew(self, stream_ids: list[str]) -> None:
        pass  # a producer here lives and dies with its subscribers' worker

    def request_cancel(self, stream_id: str) -> None:
        self._get(stream_id).cancel = True
        self._signal(stream_id)

    def cancel_requested(self, stream_id: str) -> bool:
        return self._get(stream_id).cancel

    def join(self, stream_id: str, subscriber: str) -> None:
        self._get(stream_id).subscribers.add(subscriber)

    def leave(self, stream_id: str, subscriber: str) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.subscribers.discard(subscriber)
            self._signal(stream_id)

    def subscribers(self, stream_id: str) -> int:
        return len(self._get(stream_id).subscribers)

    def on_signal(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)

    def _signal(self, stream_id: str) -> None:
        for callback in self._callbacks:
            callback(stream_id)

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._swept < SWEEP_SECONDS:
            return
        self._swept = now
        for stream_id in [k for k, s in self.streams.items() if s.expires_at < now]:
            del self.streams[stream_id]
