"""The Redis hub's flusher: every stream's new records, written in one round trip per flush.

A flush is one ``XADD`` per stream with new records (its entry holding them; the stream's
meta at its start and end), then one ``PUBLISH`` naming those of them that subscribers on
other workers follow (none: no ``PUBLISH``), all sent at once. On one Redis node they go on
a connection the flusher holds, packed together, and each reply is read in turn; on a Redis
Cluster, in a pipeline split by node. Flushes start at most ``FLUSH_INTERVAL_SECONDS`` apart,
so under load each carries more streams (``bench/PROFILE.md``, "The flush").
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from . import TERMINAL
from .memory import MemoryHub, Stream
from .redis_batch import StreamBatcher
from .redis_io import (
    ERRORS,
    HeldConnection,
    events_key,
    meta_key,
    notice_channel,
    round_trip,
    subs_key,
)

log = logging.getLogger(__name__)

# A flush starts at most this long after the one before (an idle worker's first record
# goes at once): under a steady load, flushing at each round trip made a flush of a few
# streams per token (bench/PROFILE.md, "The flush").
FLUSH_INTERVAL_SECONDS = 0.005


class Flusher(StreamBatcher):
    """Writes what producers here appended (the module's docstring), on the hub's
    ``flushing`` client (a connection of its own), at most one flush each
    ``FLUSH_INTERVAL_SECONDS``. Records appended during a round trip go in the next one, so
    a slow Redis gets fewer, larger flushes. :meth:`mark` is :meth:`MemoryHub.append`'s
    ``on_append``."""

    interval = FLUSH_INTERVAL_SECONDS

    def __init__(self, hub: Any, local: MemoryHub) -> None:
        super().__init__()
        self.hub, self.local = hub, local
        self._held: HeldConnection | None = None

    def work(self, batch: dict[str, Stream]) -> None:
        try:
            self._write(batch)
        except ERRORS as exc:
            self._unreachable(exc, batch)
        except Exception:
            log.exception("the Redis flush failed")
            self._fail(batch)

    def _unreachable(self, exc: BaseException, batch: dict[str, Stream]) -> None:
        """Fail ``batch``'s streams; the next stream's start checks Redis first. Logged once
        an outage, not once a flush or a stream."""
        if self.hub.healthy:
            log.warning("Redis is unreachable or refused the flush (%r): %d streams end with "
                        "hub_unavailable", exc, len(batch))
        self.hub.healthy = False
        self._fail(batch)

    def _write(self, batch: dict[str, Stream]) -> None:
        hub = self.hub
        commands: list[tuple[Any, ...]] = []
        plan: list[tuple[str, Stream, int, int]] = []  # stream, its end, its XADD's index
        for stream_id, stream in batch.items():
            start, end = stream.sent_end, stream.end
            if stream.failed or start >= end:
                continue
            events = events_key(stream_id)
            terminal = stream.records[-1][1] in TERMINAL
            if start == 0 or terminal:
                meta = meta_key(stream_id)
            if start == 0:
                commands += (("HSET", meta, "owner", stream.owner or "", "worker", hub.worker,
                              "finished", 0, "cancel", 0),
                             ("EXPIRE", meta, hub.live_ttl))
            # Never more than a stream keeps (the older ones were never readable here).
            records = stream.records[max(start - stream.first_id,
                                         len(stream.records) - hub.max_events):]
            plan.append((stream_id, stream, end, len(commands)))
            # One entry for this flush's records; past RILL_STREAM_MAX_EVENTS, trimmed to
            # the entries holding the last of them.
            trim = () if end <= hub.max_events else ("MINID", "=",
                                                      f"0-{end - hub.max_events + 1}")
            commands.append(("XADD", events, *trim, f"0-{end}", "d", orjson.dumps(records)))
            if terminal:
                commands += (("HSET", meta, "finished", 1), ("EXPIRE", events, hub.ttl),
                             ("EXPIRE", meta, hub.ttl), ("EXPIRE", subs_key(stream_id), hub.ttl))
            elif start == 0:
                commands.append(("EXPIRE", events, hub.live_ttl))
            stream.sent_end = end
        if not plan:
            return
        if self._held is None:
            self._held = HeldConnection(hub.flushing)
        # Named only when a subscriber elsewhere follows it (its worker's join signal): a
        # worker following one stream here parses no ids of the others.
        followed = [p[0] for p in plan if p[1].remote]
        notice = (notice_channel(hub.worker), " ".join(followed)) if followed else None
        try:
            results = round_trip(self._held, commands, notice)
        except ERRORS as exc:
            self._unreachable(exc, {p[0]: p[1] for p in plan})
            return
        refused: dict[str, Stream] = {}
        for stream_id, stream, end, index in plan:
            if isinstance(results[index], Exception):
                refused[stream_id], error = stream, results[index]
            else:
                self.local.made_durable(stream, end)
        if refused:  # Redis full, read-only or failing its snapshots; or producer_lost took an id
            self._unreachable(error, refused)
        else:
            hub.healthy = True

    def _fail(self, batch: dict[str, Stream]) -> None:
        for stream_id, stream in batch.items():
            self.local.fail(stream)
            self.local.signal(stream_id)  # its producer stops: cancel_requested raises
