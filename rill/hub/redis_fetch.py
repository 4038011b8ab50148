"""The Redis hub's reads of streams produced elsewhere: the fetcher, one round trip per notice,
and a subscriber's read (:func:`read_elsewhere`).

Subscribers here to a stream another worker produces share one copy of its recent records
(the follow's :class:`~rill.hub.memory.Stream`). When that worker's flush notice names the
stream, the :class:`Fetcher` reads what is new (``XRANGE`` from the copy's end) for every
stream the notice named, in one round trip, appends it to each copy and wakes the
subscribers, who read it from memory as on the producing worker. Without it each subscriber
ran its own ``XRANGE`` per notice through the shared pool: 180 µs of worker CPU per event
(``bench/PROFILE.md``, "Subscribers on another worker").
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from ..errors import EventsExpired
from . import TERMINAL, Record
from .memory import Stream
from .redis_batch import StreamBatcher
from .redis_io import ERRORS, HeldConnection, events_key, guard, round_trip

log = logging.getLogger(__name__)


def entries_records(reply: Any, after: int = -1) -> list[Record]:
    """The records after id ``after`` of ``XRANGE``'s entries (redis-py's parsed
    ``(id, {b"d": …})`` or a held connection's raw ``[id, [b"d", …]]``), up to the first
    terminal one: a flush already out when a subscriber elsewhere wrote ``producer_lost``
    lands after it."""
    records: list[Record] = []
    for _, fields in reply:
        for r in orjson.loads(fields[b"d"] if isinstance(fields, dict) else fields[1]):
            if r[0] > after:
                records.append((r[0], r[1], r[2]))
                if r[1] in TERMINAL:
                    return records
    return records


def extend(copy: Stream, records: list[Record], max_events: int) -> None:
    """Append ``records`` (ids from ``copy.end`` on, or a fresh start when the copy is empty
    or they do not follow it) to ``copy``, keeping its last ``max_events``."""
    if not records:
        return
    if not copy.records or records[0][0] != copy.end:
        if records[0][0] < copy.end:  # older than the copy: keep what is newer
            records = [r for r in records if r[0] >= copy.end]
            if not records:
                return
        else:
            copy.records, copy.first_id = [], records[0][0]
    copy.records.extend(records)
    excess = len(copy.records) - max_events
    if excess > 0:
        del copy.records[:excess]
        copy.first_id += excess
    copy.durable_end = copy.end
    copy.finished = copy.records[-1][1] in TERMINAL


class Fetcher(StreamBatcher):
    """Reads the new records of the followed streams a notice named (the module's
    docstring) through the hub's request-time client: on one Redis node on a connection it
    holds (made from that pool, apart from its ``POOL_SIZE``), on a cluster in a pipeline
    split by node. Streams named while a fetch is out go in the next one. A failed fetch
    wakes the subscribers, who then read Redis themselves and report what it says
    (:class:`~rill.errors.HubUnavailable`). :meth:`mark` is the listener's, on a notice."""

    def __init__(self, hub: Any, wake: Any) -> None:
        super().__init__()
        self.hub, self.wake = hub, wake
        self._held: HeldConnection | None = None

    def work(self, batch: dict[str, Stream]) -> None:
        try:
            self._fetch(batch)
        except ERRORS:
            pass  # each subscriber reads Redis itself and reports it
        except Exception:
            log.exception("the Redis fetch failed")
        for copy in batch.values():
            self.wake(copy)

    def _fetch(self, batch: dict[str, Stream]) -> None:
        if self._held is None:
            self._held = HeldConnection(self.hub.redis)
        commands = [("XRANGE", events_key(stream_id), f"(0-{copy.end}", "+")
                    for stream_id, copy in batch.items()]
        replies = round_trip(self._held, commands)
        for copy, reply in zip(batch.values(), replies, strict=True):
            if not isinstance(reply, Exception):
                extend(copy, entries_records(reply), self.hub.max_events)


def read_elsewhere(hub: Any, stream_id: str, after: int, timeout: float,
                   count: int) -> list[Record]:
    """Up to ``count`` records after id ``after`` of ``stream_id``, produced elsewhere,
    waiting up to ``timeout`` s for one: from the copy the fetcher keeps when a subscriber
    here follows it, else (or when the copy cannot say) from Redis. Raises
    :class:`~rill.errors.HubUnavailable`, :class:`~rill.errors.EventsExpired`."""
    follow = hub.listener.follows.get(stream_id)
    if follow is None:  # not joined here (a state check, a replay's first look)
        return range_records(hub, stream_id, after, count)
    copy = follow[1]
    changed = copy.changed  # before looking
    records = copied(copy, after, count)
    if records is None or (not records and timeout <= 0):
        # The copy does not reach id after + 1; or nothing new in it and no wait: Redis
        # may hold what others wrote (a producer_lost after the stream went quiet).
        records = range_records(hub, stream_id, after, count, copy)
    if not records and timeout > 0:
        changed.wait(timeout)
        # Woken by a fetch, or not (a timeout, the listener's reconnect): then Redis
        # itself, which also holds what others wrote (producer_lost).
        records = copied(copy, after, count) or range_records(hub, stream_id, after, count,
                                                              copy)
    return records


def copied(copy: Stream, after: int, count: int) -> list[Record] | None:
    """The copy's records after id ``after`` ([] when it is at the copy's end), or None when
    it cannot say (empty, or ``after`` outside it)."""
    start = after + 1 - copy.first_id
    if not copy.records or start < 0 or start > len(copy.records):
        return None
    return copy.records[start:start + count]


def range_records(hub: Any, stream_id: str, after: int, count: int,
                  copy: Stream | None = None) -> list[Record]:
    """Up to ``count`` records after id ``after`` from Redis, through the hub's batcher
    (added to ``copy``, a follow's, when they continue it or it is empty)."""
    with guard():
        reply = hub.batch.run([("XRANGE", events_key(stream_id), f"(0-{after + 1}", "+",
                                "COUNT", count)])[0]
    records = entries_records(reply, after)
    if records and records[0][0] > after + 1:
        raise EventsExpired()
    if copy is not None:
        extend(copy, records, hub.max_events)
    return records[:count]
