"""The Redis hub: any worker or instance can serve any stream, and the worker that runs a
generation serves its own subscribers from memory.

A stream produced here lives in this worker's memory (:class:`~rill.hub.memory.MemoryHub`,
deferred) and in Redis. The :class:`~rill.hub.redis_flush.Flusher` writes every stream's new
records in one pipelined round trip per flush; subscribers here read a record once Redis
holds it, so whatever a client saw can be resumed anywhere. Subscribers elsewhere read Redis
through a copy per worker that one round trip refreshes on each of the producing worker's
flush notices (:class:`~rill.hub.redis_listener.Listener`,
:class:`~rill.hub.redis_fetch.Fetcher`).

Keys, per stream ``S`` (one hash tag, so one cluster slot; all expire
``RILL_STREAM_TTL_SECONDS`` after the stream finishes):

- ``rill:{S}:events`` — a Redis Stream. Each flush adds one entry holding that flush's
  records; its id is ``0-(n+1)`` for ``n`` the last record's id, so ``XRANGE … (0-(k+1)``
  starts at the entry holding the events after Last-Event-ID ``k``. ``XADD`` with an explicit
  id refuses a second ``producer_lost``. ``MINID`` trims it to the entries holding the last
  ``RILL_STREAM_MAX_EVENTS`` events.
- ``rill:{S}:meta`` — hash: ``owner``, ``worker`` (who produces it), ``finished``, ``cancel``.
- ``rill:{S}:subs`` — sorted set of subscribers elsewhere, scored by when they lapse.

Per worker ``W``: ``rill:worker:W``, renewed every lease/6 with a TTL of half the lease
(``RILL_PRODUCER_LEASE_SECONDS``) by a native thread (:class:`~rill.hub.heartbeat.Heartbeat`),
so a worker may miss two renewals before it lapses. A stream is ``lost`` when it is
unfinished and its worker's key is gone, and still gone a renewal period later (an evicted
or late key comes back by then): that worker died, or lost Redis, at least a third of a
lease ago. A subscriber looks every quarter lease, so it reports a kill -9 within the
lease. Cancels and leaves for a stream produced elsewhere
go on ``rill:signal``. Redis errors become :class:`~rill.errors.HubUnavailable`.
"""

from __future__ import annotations

import functools
import os
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from .. import metrics, tasks
from ..errors import HubUnavailable, StreamNotFound
from . import Record, State
from .heartbeat import Heartbeat
from .memory import MemoryHub
from .redis_batch import Batcher, batcher
from .redis_fetch import Fetcher, read_elsewhere
from .redis_flush import Flusher
from .redis_io import (
    SIGNAL_CHANNEL,
    connect,
    disconnect,
    events_key,
    guard,
    meta_key,
    shared,
    subs_key,
    worker_key,
)
from .redis_listener import Listener

LINGER_SECONDS = 10.0  # a finished stream stays in the producing worker's memory this long
READY_CACHE_SECONDS = 1.0  # /readyz pings Redis at most this often per worker

# Append ``record`` (ARGV[2]) as entry ARGV[1] only if the last entry is the one before it
# (ARGV[3]) and the stream is not finished: producer_lost, written once by any subscriber.
_APPEND_IF_NEXT = """
if redis.call('HGET', KEYS[2], 'finished') ~= '0' then return 0 end
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top == 0 or top[1][1] ~= ARGV[3] then return 0 end
redis.call('XADD', KEYS[1], ARGV[1], 'd', ARGV[2])
redis.call('HSET', KEYS[2], 'finished', 1)
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
"""


class RedisHub:
    """Streams in Redis, and the ones produced here in memory too (the module's docstring).
    Connections per worker, whatever the number of streams: ``POOL_SIZE`` for requests (and
    one that the stream caps' batcher holds), one the fetcher holds, two for the flusher
    (one it holds, one for ``open``'s pings), one listener's and one heartbeat thread's."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.url = config["RILL_REDIS_URL"]
        self.timeout = config["RILL_REDIS_TIMEOUT_SECONDS"]
        heartbeat = config["RILL_HEARTBEAT_SECONDS"]
        self.max_events = config["RILL_STREAM_MAX_EVENTS"]
        self.ttl = int(config["RILL_STREAM_TTL_SECONDS"])
        self.live_ttl = int(config["RILL_STREAM_MAX_SECONDS"] + self.ttl)
        self.lease = config["RILL_PRODUCER_LEASE_SECONDS"]
        self._lease_ttl_ms = int(self.lease * 500)
        self.presence = max(heartbeat, self.lease) * 2 + 1
        self.local = MemoryHub(config, deferred=True, linger=min(LINGER_SECONDS, self.ttl))
        self.flusher = Flusher(self, self.local)
        self.local.on_append = self.flusher.mark
        self.listener = Listener(self, self.local)
        self.fetcher = Fetcher(self, self.local.wake)
        self.healthy = False  # the last round trip worked; until one has, open() asks
        self._checking: Any = None  # the event of open()'s check in flight
        self._reachable, self._pinged_at = False, -READY_CACHE_SECONDS
        self._pid = 0
        self.worker = ""
        self._heartbeat: Heartbeat | None = None

    # Clients are made on first use, and made again until that works: a Redis Cluster
    # client connects when it is made, and the cluster may be down when the worker boots.

    @functools.cached_property
    def redis(self) -> Any:
        return shared(self.url, self.timeout)

    @functools.cached_property
    def batch(self) -> Batcher:
        """Request-time commands (owner, state, join, leave, cancel, reads from Redis): the
        calls of many requests share round trips on one connection, never waiting for the
        pool (``rill.hub.redis_batch``)."""
        return batcher(self.redis, self.timeout)

    @functools.cached_property
    def flushing(self) -> Any:
        """The flusher's: one round trip at a time, never behind requests in the pool. On one
        Redis node the flusher holds a connection of it, and ``open()``'s ping uses another."""
        return connect(self.url, self.timeout, pool_size=1)

    @functools.cached_property
    def signals(self) -> Any:
        """The listener's: it waits for messages indefinitely, so no read timeout; a broken
        connection is the listener's to make again (it then reloads what a lost message
        could have said), not redis-py's."""
        return connect(self.url, self.timeout, pool_size=2, socket_timeout=None,
                       socket_keepalive=True, again=False)

    @functools.cached_property
    def _append_if_next(self) -> Any:
        return self.redis.register_script(_APPEND_IF_NEXT)

    # Producing, on this worker.

    def open(self, stream_id: str, owner: str | None) -> None:
        """Create ``stream_id`` here; its meta reaches Redis with its first flush. Raises
        :class:`HubUnavailable` when Redis did not answer the last round trip and still
        does not."""
        self._start()
        if not self.healthy:
            self._check()
        self.local.open(stream_id, owner)

    def _check(self) -> None:
        """Whether Redis answers (this worker's lease key written, the flusher's client
        connected: a cluster's finds its slots when made), one check at a time: a burst of
        starts waits for the check in flight instead of sending one each (1,500 at once on a
        fresh worker waited out the flusher's one spare connection: 503s from a healthy
        Redis). Raises :class:`HubUnavailable`."""
        checking = self._checking
        if checking is not None:
            checking.wait(3 * self.timeout)
            if not self.healthy:
                raise HubUnavailable()
            return
        checking = self._checking = tasks.event()
        try:
            with guard():
                self.batch.run([("SET", worker_key(self.worker), 1, "PX", self._lease_ttl_ms)])
                self.flushing.ping()
            self.healthy = True
        finally:
            self._checking = None
            checking.set()

    def _start(self) -> None:
        """This process's worker id, heartbeat and listener (never in a preloading arbiter:
        a fork keeps neither threads nor greenlets)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self.worker = f"{os.getpid()}-{secrets.token_hex(6)}"
            self._heartbeat = Heartbeat(self.url, self.worker, self.lease / 6,
                                        self._lease_ttl_ms)
        self.listener.start()

    def append(self, stream_id: str, records: list[Record]) -> None:
        self.local.append(stream_id, records)

    def cancel_requested(self, stream_id: str) -> bool:
        return self.local.cancel_requested(stream_id)

    def subscribers(self, stream_id: str) -> int:
        return self.local.subscribers(stream_id)

    def on_signal(self, callback: Callable[[str], None]) -> None:
        self.local.on_signal(callback)

    def close(self) -> None:
        """Stop this worker's heartbeat (its streams are then lost within a lease) and its
        listener, and close its connections."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
        self.listener.stop()
        for client in ("redis", "flushing", "signals"):
            if client in self.__dict__:
                disconnect(self.__dict__[client])

    def reachable(self) -> bool:
        """Whether Redis answered a ``PING`` (within ``RILL_REDIS_TIMEOUT_SECONDS``) at most
        ``READY_CACHE_SECONDS`` ago: one ping at a time, so a storm of readiness probes
        costs Redis one a second; probes during a ping get the last answer."""
        now = time.monotonic()
        if now - self._pinged_at >= READY_CACHE_SECONDS:
            self._pinged_at = now
            try:
                with guard():
                    self.redis.ping()
                self._reachable = True
            except HubUnavailable:
                self._reachable = self.healthy = False  # open() asks Redis again
            self._pinged_at = time.monotonic()
        return self._reachable

    @property
    def idle(self) -> bool:
        """Nothing appended here is still on its way to Redis."""
        return not self.flusher.marked and not self.flusher.busy

    # Any worker.

    def read(self, stream_id: str, after: int, timeout: float, count: int) -> list[Record]:
        stream = self.local.get(stream_id)
        if stream is not None and after + 1 >= stream.first_id:
            return self.local.read(stream_id, after, timeout, count)
        return read_elsewhere(self, stream_id, after, timeout, count)

    def state(self, stream_id: str) -> State:
        stream = self.local.get(stream_id)
        if stream is not None:
            return self.local.state(stream_id)
        for confirming in (False, True):
            if confirming:  # before anyone writes producer_lost: still gone a beat later?
                tasks.sleep(self.lease / 6)
            with guard():
                finished, worker = self.batch.run([("HMGET", meta_key(stream_id), "finished",
                                                    "worker")])[0]
                if finished is None:
                    raise StreamNotFound()
                if finished == b"1":
                    return "finished"
                if worker and self.batch.run([("EXISTS", worker_key(worker.decode()))])[0]:
                    return "live"
        return "lost"

    def owner(self, stream_id: str) -> str | None:
        if self.local.get(stream_id) is not None:
            return self.local.owner(stream_id)
        with guard():
            owner = self.batch.run([("HGET", meta_key(stream_id), "owner")])[0]
        if owner is None:
            raise StreamNotFound()
        return owner.decode() or None

    def request_cancel(self, stream_id: str) -> None:
        if self.local.get(stream_id) is not None:
            self.local.request_cancel(stream_id)
            return
        with guard():
            self.batch.run([("HSET", meta_key(stream_id), "cancel", 1)],
                           (SIGNAL_CHANNEL, f"c {stream_id}"))

    def join(self, stream_id: str, subscriber: str) -> None:
        """Mark ``subscriber`` present: in memory for a stream produced here, else in the
        stream's ``subs`` and by a signal to its producer (renewed each read period)."""
        if self.local.get(stream_id) is not None:
            self.local.join(stream_id, subscriber)
            return
        lapses = time.time() + self.presence
        subs = subs_key(stream_id)
        with guard():
            worker = self.batch.run(
                [("HGET", meta_key(stream_id), "worker"), ("ZADD", subs, lapses, subscriber),
                 ("EXPIRE", subs, self.live_ttl)],
                (SIGNAL_CHANNEL, f"j {stream_id} {subscriber} {lapses:.3f}"))[0]
        if worker is not None:
            self.listener.follow(stream_id, worker.decode(), subscriber)

    def leave(self, stream_id: str, subscriber: str) -> None:
        if stream_id in self.local.streams:
            self.local.leave(stream_id, subscriber)
            return
        self.listener.unfollow(stream_id, subscriber)
        with guard():
            self.batch.run([("ZREM", subs_key(stream_id), subscriber)],
                           (SIGNAL_CHANNEL, f"l {stream_id} {subscriber}"))

    def append_if_next(self, stream_id: str, record: Record) -> None:
        """Write ``record`` (``producer_lost``) once, only right after the last event."""
        if self.local.get(stream_id) is not None:
            self.local.append_if_next(stream_id, record)
            return
        id_ = record[0]
        keys = [events_key(stream_id), meta_key(stream_id), subs_key(stream_id)]
        with guard():  # Redis refusing the write (full, read-only) ends the subscriber's stream
            if self.batch.call(self._append_if_next, keys, [f"0-{id_ + 1}",
                                                             orjson.dumps([record]),
                                                             f"0-{id_}", self.ttl]):
                # Its producer is gone and cannot count it; whoever wrote it, once.
                metrics.STREAMS.labels(record[2].get("code", "internal")).inc()
