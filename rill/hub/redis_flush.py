"""The Redis hub's flusher: every stream's new records, written in one round trip per flush.

Each flush is one pipeline of calls to one Lua script (``FLUSH``, run with ``EVALSHA``),
each call writing up to ``STREAMS_PER_CALL`` streams (one ``XADD`` each, the stream's meta
at its start and end), then one ``PUBLISH`` naming the streams written. A script call
replies with one array however many streams it wrote, so the worker packs and parses one
command per call, not one per stream: that was half of the flusher's cost with a pipeline
of ``XADD`` commands (``bench/PROFILE.md``, "The flush as a script"). On a Redis Cluster
each call holds one stream (a script's keys must share a slot; a stream's keys do).
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
from .redis_io import ERRORS, events_key, meta_key, notice_channel, subs_key

log = logging.getLogger(__name__)

# A flush starts at most this long after the one before (an idle worker's first record
# goes at once): under a steady load, a worker flushing at each round trip spent a third
# of its CPU on flushes of a few streams each (bench/PROFILE.md, "The flush as a script").
FLUSH_INTERVAL_SECONDS = 0.005
STREAMS_PER_CALL = 256  # on one Redis node; a call holds Redis for ~0.1 ms per stream

# KEYS: per stream, its events, meta and subs keys. ARGV: this worker, the live TTL, the
# finished TTL (s), then per stream: started (1 at its first flush), terminal (1 with its
# last record), the entry id, MINID to trim to ("" for none), the entry's data, the owner.
# Replies with {position, error, ...} for the streams whose XADD Redis refused (e.g. a
# subscriber's producer_lost took the id), as the pipeline of commands it replaced did.
FLUSH = """
local worker, live, ttl = ARGV[1], ARGV[2], ARGV[3]
local refused = {}
for i = 1, #KEYS / 3 do
  local events, meta, subs = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local a = 3 + 6 * (i - 1)
  local started, terminal = ARGV[a + 1] == '1', ARGV[a + 2] == '1'
  if started then
    redis.call('HSET', meta, 'owner', ARGV[a + 6], 'worker', worker, 'finished', 0,
               'cancel', 0)
    redis.call('EXPIRE', meta, live)
  end
  local added
  if ARGV[a + 4] == '' then
    added = redis.pcall('XADD', events, ARGV[a + 3], 'd', ARGV[a + 5])
  else
    added = redis.pcall('XADD', events, 'MINID', '=', ARGV[a + 4], ARGV[a + 3], 'd',
                        ARGV[a + 5])
  end
  if type(added) == 'table' and added.err then
    refused[#refused + 1] = i
    refused[#refused + 1] = added.err
  end
  if terminal then
    redis.call('HSET', meta, 'finished', 1)
    redis.call('EXPIRE', events, ttl)
    redis.call('EXPIRE', meta, ttl)
    redis.call('EXPIRE', subs, ttl)
  elseif started then
    redis.call('EXPIRE', events, live)
  end
end
return refused
"""

Plan = list[tuple[str, Stream, int]]  # a call's streams: id, stream, its new end


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
        self._sha = ""  # FLUSH's, once loaded on the flushing client's nodes
        self._connection: Any = None  # on one Redis node: the flushing client's, held

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
        per_call = 1 if isinstance(hub.flushing, redis.RedisCluster) else STREAMS_PER_CALL
        head = (hub.worker, hub.live_ttl, hub.ttl)
        calls: list[tuple[list[str], list[Any], Plan]] = []
        keys: list[str] = []
        args: list[Any] = [*head]
        plan: Plan = []
        for stream_id, stream in batch.items():
            start, end = stream.sent_end, stream.end
            if stream.failed or start >= end:
                continue
            # Never more than a stream keeps (the older ones were never readable here).
            records = stream.records[max(start - stream.first_id,
                                         len(stream.records) - hub.max_events):]
            # One entry for this flush's records; past RILL_STREAM_MAX_EVENTS, trimmed to
            # the entries holding the last of them.
            keys += (events_key(stream_id), meta_key(stream_id), subs_key(stream_id))
            args += ("1" if start == 0 else "0", "1" if records[-1][1] in TERMINAL else "0",
                     f"0-{end}",
                     "" if end <= hub.max_events else f"0-{end - hub.max_events + 1}",
                     orjson.dumps(records), (stream.owner or "") if start == 0 else "")
            plan.append((stream_id, stream, end))
            stream.sent_end = end
            if len(plan) == per_call:
                calls.append((keys, args, plan))
                keys, args, plan = [], [*head], []
        if plan:
            calls.append((keys, args, plan))
        if calls:
            self._send(calls)

    def _send(self, calls: list[tuple[list[str], list[Any], Plan]], retry: bool = True) -> None:
        if not self._sha:
            self._sha = self.hub.flushing.script_load(FLUSH)  # every primary of a cluster
        commands = [("EVALSHA", self._sha, len(keys), *keys, *args) for keys, args, _ in calls]
        notice = ("PUBLISH", notice_channel(self.hub.worker),
                  " ".join(s[0] for *_, plan in calls for s in plan))
        try:
            results = self._round_trip(commands, notice)
        except ERRORS as exc:
            self._unreachable(exc, {s[0]: s[1] for *_, plan in calls for s in plan})
            return
        self.hub.healthy = True
        again = []
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, redis.exceptions.NoScriptError) and retry:
                again.append(call)  # the script cache was flushed, or a replica took over
            elif isinstance(result, Exception):  # e.g. a cluster node away
                self._refused(call[2], {i: result for i in range(1, len(call[2]) + 1)})
            else:
                refused = dict(zip(result[::2], result[1::2], strict=True))
                self._refused(call[2], refused)
        if again:
            self._sha = ""
            self._send(again, retry=False)

    def _round_trip(self, commands: list[tuple[Any, ...]], notice: tuple[str, ...]) -> list[Any]:
        """Each command's reply or error, then ``PUBLISH`` ``notice``. On one Redis node, on a
        connection the flusher holds: a pool's checkout polls the socket for stray data
        (``can_read``) each time, about 60 µs here, a third of a flush. A cluster's
        pipeline splits the commands by node (a pipeline cannot carry a ``PUBLISH``)."""
        client = self.hub.flushing
        if isinstance(client, redis.RedisCluster):
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            results: list[Any] = pipe.execute(raise_on_error=False)
            client.execute_command(*notice)
            return results
        if self._connection is None:
            self._connection = client.connection_pool.make_connection()  # closed with it
        connection = self._connection
        try:
            connection.send_packed_command(connection.pack_commands([*commands, notice]))
            results = []
            for _ in commands:
                try:
                    results.append(connection.read_response())
                except redis.ResponseError as exc:
                    results.append(exc)
            connection.read_response()
        except BaseException:
            connection.disconnect()  # no reply left half read; it connects again when used
            raise
        return results

    def _refused(self, plan: Plan, refused: dict[int, Any]) -> None:
        """The streams of one call are written but those at ``refused``'s positions (from 1)."""
        for position, (stream_id, stream, end) in enumerate(plan, 1):
            if position in refused:
                log.warning("stream %s: Redis refused its events (%s)", stream_id[:6],
                            refused[position])
                self._fail({stream_id: stream})
            else:
                self.local.made_durable(stream, end)

    def _fail(self, batch: dict[str, Stream]) -> None:
        for stream_id, stream in batch.items():
            self.local.fail(stream)
            self.local.signal(stream_id)  # its producer stops: cancel_requested raises
