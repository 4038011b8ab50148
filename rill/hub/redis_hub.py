"""The Redis hub: streams in Redis Streams, so any worker or instance can serve any stream.

Keys, per stream ``S`` (all expire ``RILL_STREAM_TTL_SECONDS`` after the stream finishes):

- ``rill:S:events`` — a Redis Stream; event ``n`` is entry ``0-(n+1)`` (Redis forbids
  ``0-0``), so ``XREAD … 0-(k+1)`` is exactly "the events after Last-Event-ID k". ``XADD``
  with an explicit id also makes ``producer_lost`` idempotent across subscribers.
  ``MAXLEN ~`` bounds it to about ``RILL_STREAM_MAX_EVENTS``.
- ``rill:S:meta`` — hash: ``owner``, ``finished``, ``cancel``.
- ``rill:S:lease`` — exists while the producer renews it (``PX`` lease).
- ``rill:S:subs`` — sorted set of subscribers scored by when their presence lapses.

Cancels and leaves are also published on ``rill:signal`` so the producing worker acts at once.
Redis errors become :class:`~rill.errors.HubUnavailable`. redis-py is cooperative under gevent.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import orjson
import redis

from .. import tasks
from ..errors import EventsExpired, HubUnavailable, StreamNotFound
from . import TERMINAL, Record, State

log = logging.getLogger(__name__)

SIGNAL_CHANNEL = "rill:signal"


@contextlib.contextmanager
def _guard() -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise HubUnavailable() from exc


class RedisHub:
    appends_in_place = False
    leased = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        heartbeat = config["RILL_HEARTBEAT_SECONDS"]
        url = config["RILL_REDIS_URL"]
        # Each subscriber waits in its own blocking XREAD, and each producer writes: size the
        # pool to the stream cap (redis-py's default of 100 refuses the 101st).
        streams = config["RILL_MAX_STREAMS"] or 50_000
        self.redis = redis.Redis.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=max(10.0, heartbeat + 5.0),
            health_check_interval=30, max_connections=2 * streams + 64)
        # The signal listener waits for messages indefinitely: no read timeout of its own.
        self._signals = redis.Redis.from_url(url, socket_connect_timeout=2.0,
                                             socket_keepalive=True)
        self.max_events = config["RILL_STREAM_MAX_EVENTS"]
        self.ttl = int(config["RILL_STREAM_TTL_SECONDS"])
        self.live_ttl = int(config["RILL_STREAM_MAX_SECONDS"] + self.ttl)
        self.lease_ms = int(config["RILL_PRODUCER_LEASE_SECONDS"] * 1000)
        self.presence = max(heartbeat, config["RILL_PRODUCER_LEASE_SECONDS"]) * 2 + 1
        self._callbacks: list[Callable[[str], None]] = []
        self._listener: tasks.Task | None = None

    def open(self, stream_id: str, owner: str | None) -> None:
        self._listen()
        keys = _keys(stream_id)
        with _guard(), self.redis.pipeline() as pipe:
            pipe.hset(keys["meta"], mapping={"owner": owner or "", "finished": 0, "cancel": 0})
            pipe.expire(keys["meta"], self.live_ttl)
            pipe.set(keys["lease"], 1, px=self.lease_ms)
            pipe.execute()

    def append(self, stream_id: str, records: list[Record]) -> None:
        keys = _keys(stream_id)
        with _guard(), self.redis.pipeline() as pipe:
            for id_, kind, payload in records:
                pipe.xadd(keys["events"], {"e": kind, "d": orjson.dumps(payload)},
                          id=f"0-{id_ + 1}", maxlen=self.max_events, approximate=True)
            if records[-1][1] in TERMINAL:
                pipe.hset(keys["meta"], "finished", 1)
                pipe.delete(keys["lease"])
                for key in ("events", "meta", "subs"):
                    pipe.expire(keys[key], self.ttl)
            elif records[0][0] == 0:
                pipe.expire(keys["events"], self.live_ttl)
            pipe.execute()

    def append_if_next(self, stream_id: str, record: Record) -> None:
        with contextlib.suppress(redis.ResponseError):
            self.append(stream_id, [record])  # XADD refuses an id already taken

    def read(self, stream_id: str, after: int, timeout: float, count: int) -> list[Record]:
        key = _keys(stream_id)["events"]
        with _guard():
            reply: Any = self.redis.xread({key: f"0-{after + 1}"}, count=count,
                                          block=max(int(timeout * 1000), 1))
        if not reply:
            return []
        records = [(int(entry_id.split(b"-")[1]) - 1, fields[b"e"].decode(),
                    orjson.loads(fields[b"d"])) for entry_id, fields in reply[0][1]]
        if records[0][0] > after + 1:
            raise EventsExpired()
        return records

    def state(self, stream_id: str) -> State:
        keys = _keys(stream_id)
        with _guard(), self.redis.pipeline() as pipe:
            pipe.hget(keys["meta"], "finished")
            pipe.exists(keys["lease"])
            finished, leased = pipe.execute()
        if finished is None:
            raise StreamNotFound()
        if finished == b"1":
            return "finished"
        return "live" if leased else "lost"

    def owner(self, stream_id: str) -> str | None:
        with _guard():
            owner: Any = self.redis.hget(_keys(stream_id)["meta"], "owner")
        if owner is None:
            raise StreamNotFound()
        return owner.decode() or None

    def renew(self, stream_ids: list[str]) -> None:
        with _guard(), self.redis.pipeline() as pipe:
            for stream_id in stream_ids:
                pipe.set(_keys(stream_id)["lease"], 1, px=self.lease_ms)
            pipe.execute()

    def request_cancel(self, stream_id: str) -> None:
        with _guard():
            self.redis.hset(_keys(stream_id)["meta"], "cancel", 1)
            self.redis.publish(SIGNAL_CHANNEL, stream_id)

    def cancel_requested(self, stream_id: str) -> bool:
        with _guard():
            return self.redis.hget(_keys(stream_id)["meta"], "cancel") == b"1"

    def join(self, stream_id: str, subscriber: str) -> None:
        key = _keys(stream_id)["subs"]
        with _guard(), self.redis.pipeline() as pipe:
            pipe.zadd(key, {subscriber: time.time() + self.presence})
            pipe.expire(key, self.live_ttl)
            pipe.execute()

    def leave(self, stream_id: str, subscriber: str) -> None:
        with _guard():
            self.redis.zrem(_keys(stream_id)["subs"], subscriber)
            self.redis.publish(SIGNAL_CHANNEL, stream_id)

    def subscribers(self, stream_id: str) -> int:
        key = _keys(stream_id)["subs"]
        with _guard(), self.redis.pipeline() as pipe:
            pipe.zremrangebyscore(key, "-inf", time.time())
            pipe.zcard(key)
            return int(pipe.execute()[1])

    def on_signal(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)

    def _listen(self) -> None:
        """Start the signal listener in this process (lazily: never in a preloading arbiter)."""
        if self._listener is None or self._listener.dead:
            self._listener = tasks.spawn(self._run_listener)

    def _run_listener(self) -> None:
        while True:
            try:
                pubsub = self._signals.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(SIGNAL_CHANNEL)
                for message in pubsub.listen():
                    stream_id = message["data"].decode()
                    for callback in self._callbacks:
                        callback(stream_id)
            except (redis.ConnectionError, redis.TimeoutError):
                tasks.sleep(1.0)  # Redis is away; producers still poll each lease tick


def _keys(stream_id: str) -> dict[str, str]:
    base = f"rill:{stream_id}"
    return {"events": f"{base}:events", "meta": f"{base}:meta", "lease": f"{base}:lease",
            "subs": f"{base}:subs"}
