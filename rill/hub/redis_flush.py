"""The Redis hub's flusher: every stream's new records, written in one round trip per flush.

A flush is one ``XADD`` per stream with new records (its entry holding them; the stream's
meta at its start and end), then one ``PUBLISH`` naming the streams written, all sent at
once. On one Redis node they go on a connection the flusher holds, packed together, and
each reply is read in turn; on a Redis Cluster, in a pipeline split by node. Flushes start
at most ``FLUSH_INTERVAL_SECONDS`` apart, so under load each carries more streams
(``bench/PROFILE.md``, "The flush").
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import redis

from .. import tasks
from . import TERMINAL
from .memory import MemoryHub, Stream
from .redis_io import (
    ERRORS,
    HeldConnection,
    events_key,
    execute,
    meta_key,
    notice_channel,
    subs_key,
)

log = logging.getLogger(__name__)

# A flush starts at most this long after the one before (an idle worker's first record
# goes at once): under a steady load, flushing at each round trip made a flush of a few
# streams per token (bench/PROFILE.md, "The flush").
FLUSH_INTERVAL_SECONDS = 0.005


class Flusher:
    """Writes what producers here appended (the module's docstring), on the hub's
    ``flushing`` client (a connection of its own), at most one flush each
    ``FLUSH_INTERVAL_SECONDS``. Records appended during a round trip go in the next one, so
    a slow Redis gets fewer, larger flushes."""

    def __init__(self, hub: Any, local: MemoryHub) -> None:
        self.hub, self.local = hub, local
        self.dirty: dict[str, Stream] = {}
        self._wake = tasks.event()
        self._task: tasks.Task | None = None
        self.busy = False
        self._held: HeldConnection | None = None  # on one Redis node

    def mark(self, stream_id: str, stream: Stream) -> None:
        """``stream`` has records to write (called by :meth:`MemoryHub.append`)."""
        if not self.dirty:
            self._wake.set()
            if self._task is None or self._task.dead:
                self._task = tasks.spawn(self._run)
        self.dirty[stream_id] = stream

    def _run(self) -> None:
        last = -FLUSH_INTERVAL_SECONDS
        while True:
            self._wake.wait()
            self._wake.clear()
            while self.dirty:
                if (wait := last + FLUSH_INTERVAL_SECONDS - time.monotonic()) > 0:
                    tasks.sleep(wait)  # more records, of more streams, ride this flush
                last = time.monotonic()
                batch, self.dirty = self.dirty, {}
                self.busy = True
                try:
                    self._write(batch)
                except ERRORS as exc:
                    self._unreachable(exc, batch)
                except Exception:
                    log.exception("the Redis flush failed")
                    self._fail(batch)
                finally:
                    self.busy = False

    def _unreachable(self, exc: BaseException, batch: dict[str, Stream]) -> None:
        if self.hub.healthy:
            log.warning("Redis is unreachable (%r): %d streams end with hub_unavailable",
                        exc, len(batch))
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
        notice = ("PUBLISH", notice_channel(hub.worker), " ".join(p[0] for p in plan))
        try:
            results = self._round_trip(commands, notice)
        except ERRORS as exc:
            self._unreachable(exc, {p[0]: p[1] for p in plan})
            return
        hub.healthy = True
        for stream_id, stream, end, index in plan:
            if isinstance(results[index], Exception):  # e.g. a producer_lost took the id
                log.warning("stream %s: Redis refused its events (%s)", stream_id[:6],
                            results[index])
                self._fail({stream_id: stream})
            else:
                self.local.made_durable(stream, end)

    def _round_trip(self, commands: list[tuple[Any, ...]], notice: tuple[str, ...]) -> list[Any]:
        """Each command's reply or error, then ``PUBLISH`` ``notice``: on one Redis node on a
        connection the flusher holds (:class:`~rill.hub.redis_io.HeldConnection`); on a
        cluster in a pipeline, which splits the commands by node and cannot carry a
        ``PUBLISH``."""
        client = self.hub.flushing
        if isinstance(client, redis.RedisCluster):
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return execute(client, pipe, (notice[1], notice[2]), raise_on_error=False)
        if self._held is None:
            self._held = HeldConnection(client)
        return self._held.round_trip([*commands, notice])[:-1]

    def _fail(self, batch: dict[str, Stream]) -> None:
        for stream_id, stream in batch.items():
            self.local.fail(stream)
            self.local.signal(stream_id)  # its producer stops: cancel_requested raises
