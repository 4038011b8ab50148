"""Limits on what one client, and one worker, may ask of Rill.

Two kinds: request *rates* (flask-limiter, ``RILL_RATE_LIMIT`` on POST /api/chat,
``RILL_EVENTS_RATE_LIMIT`` on GET …/events) and connections *in flight*, which a rate
limiter cannot count (:class:`StreamCaps`): streams (``RILL_MAX_STREAMS_PER_CLIENT`` and
``RILL_MAX_STREAMS``) and subscribers (``RILL_MAX_SUBSCRIBERS_PER_CLIENT``); with Redis the
per-client counts are shared by every instance (:class:`RedisStreamCaps`). All key a
client by its user id, else its address: ``request.remote_addr``, which
is the real client only because ``ProxyFix`` rewrites it when ``RILL_PROXY_HOPS`` > 0.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any

import gevent
from flask import Flask, current_app, request
from flask_limiter import Limiter

from . import tasks
from .errors import (
    HubUnavailable,
    RequestTimeout,
    RillError,
    TooManyStreams,
    TooManySubscribers,
    Unavailable,
)


def client_key() -> str:
    """Return the key a client's limits are counted under: its user id, else its address."""
    from .auth import AuthError, current_user

    try:
        user = current_user()
    except AuthError:
        user = None  # the view refuses it; rate-limit the attempt by address
    return f"user:{user}" if user else request.remote_addr or "unknown"


def _override(name: str) -> Any:
    """The current user's ``RILL_USER_LIMITS`` entry ``name``, if any."""
    from .auth import AuthError, current_user

    try:
        user = current_user()
    except AuthError:
        return None
    return current_app.config["RILL_USER_LIMITS"].get(user or "", {}).get(name)


def rate_limit() -> str:
    """The rate limit for this request: the user's override, else ``RILL_RATE_LIMIT``."""
    return str(_override("rate_limit") or current_app.config["RILL_RATE_LIMIT"])


def stream_cap() -> int | None:
    """The user's ``max_streams`` override, if any."""
    value = _override("max_streams")
    return None if value is None else int(value)


def events_rate_limit() -> str:
    """The rate limit on GET …/events: ``RILL_EVENTS_RATE_LIMIT``."""
    return str(current_app.config["RILL_EVENTS_RATE_LIMIT"])


def read_body(stream: IO[bytes], most: int, seconds: float) -> bytes:
    """Read up to ``most`` + 1 bytes of the request body, all within ``seconds``.

    A body that trickles in (a byte every few seconds) otherwise holds a greenlet for as long
    as the client likes. Raises :class:`~rill.errors.RequestTimeout` (408) when the deadline
    passes: it is raised inside gunicorn's body reader, which then marks the body failed, so
    gunicorn closes the connection after the 408 instead of reading the rest. Under gevent
    only; elsewhere (a thread cannot be interrupted) the read is not timed.
    """
    if not tasks.cooperative():
        return stream.read(most + 1)
    with gevent.Timeout(seconds, RequestTimeout(
            f"The request body did not arrive within {seconds:g} s.")):
        return stream.read(most + 1)


def init_limiter(app: Flask, limits: Mapping[str, Callable[[], str]]) -> Limiter:
    """Put each of ``limits`` (endpoint: a callable returning its limit, such as
    :func:`rate_limit`; counted per :func:`client_key`) on its endpoint.

    The limit goes onto the app's own flask-limiter ``Limiter`` if it has one (its storage,
    its headers), else onto one of Rill's (``RILL_RATELIMIT_*``; Redis when
    ``RILL_REDIS_URL`` is set, so every worker and instance shares the counts). Rill's
    leaves no ``RATELIMIT_*`` setting behind in the app's config, where a limiter the host
    adds later would read it. Returns the limiter.
    """
    config = app.config
    hosts = app.extensions.get("limiter")
    if hosts:
        limiter: Limiter = next(iter(hosts))
    else:
        storage = config["RILL_RATELIMIT_STORAGE_URI"]
        if config["RILL_REDIS_URL"] and storage == "memory://":
            storage = config["RILL_REDIS_URL"]
        if storage.split("://", 1)[0] in ("redis", "rediss"):
            from .limit_storage import storage_uri  # registers the pipelined storage

            storage = storage_uri(storage)
        timeout = config["RILL_REDIS_TIMEOUT_SECONDS"]  # a Redis storage's, as Rill's own
        limiter = Limiter(key_func=client_key, storage_uri=storage,
                          storage_options={"socket_timeout": timeout,
                                           "socket_connect_timeout": timeout}
                          if storage.startswith(("redis", "rill+redis")) else {},
                          enabled=config["RILL_RATELIMIT_ENABLED"], strategy="fixed-window",
                          # A store that is down or refusing writes should not turn requests
                          # into 500s, nor lift the limits: each worker counts in memory (one
                          # warning), checking the store again 1, 2, 4 … 32 s apart. The hub
                          # answers 503 hub_unavailable on its own when it is the same Redis.
                          swallow_errors=True, in_memory_fallback_enabled=True)
        before = set(config)
        limiter.init_app(app)
        for key in set(config) - before:
            del config[key]  # flask-limiter records its defaults there
        # Its before_request runs on every route of the app: the other routes (a host's, the
        # probes) skip it whole, so none of them waits on the store or pays for the pass.
        endpoints = frozenset(limits)
        limiter.request_filter(lambda: request.endpoint not in endpoints)
    # The limit runs in the wrapper that is the registered view.
    for view, limit in limits.items():
        limited = limiter.limit(limit, key_func=client_key)
        app.view_functions[view] = limited(app.view_functions[view])  # type: ignore[assignment]
    return limiter


@dataclass(frozen=True)
class Counted:
    """What a :class:`StreamCaps` counts: its refusal (``{cap}`` in the message), the prefix
    of its per-client Redis key, and whether a slot always counts for ``GRACE`` seconds after
    it was taken (a subscriber of a finished stream may still be replaying it)."""

    error: type[RillError]
    refusal: str
    prefix: str
    young_count: bool


STREAMS = Counted(TooManyStreams, "You already have {cap} answers streaming; wait for one "
                  "to finish and try again.", "rill:caps:", young_count=False)
SUBSCRIBERS = Counted(TooManySubscribers, "You already follow {cap} streams at once; close "
                      "one and try again.", "rill:subscribers:", young_count=True)


class StreamCaps:
    """Counts streams (or, per ``counted``, subscribers) in flight per client and in this
    worker; 0 as a cap means unlimited."""

    def __init__(self, per_client: int, per_worker: int, counted: Counted = STREAMS) -> None:
        self.per_client = per_client
        self.per_worker = per_worker
        self.counted = counted
        self.active: Counter[str] = Counter()
        self.total = 0

    def client_cap(self, cap: int | None = None) -> int:
        """A client's cap: ``cap`` (a user's own, :func:`stream_cap`), else this one's
        ``per_client``; 0 means none."""
        return self.per_client if cap is None else cap

    def acquire(self, key: str, stream_id: str = "", cap: int | None = None) -> Slot:
        """Take a slot for ``key``; release it with :meth:`Slot.release` when the stream ends.

        ``stream_id`` names the slot (for a subscriber ``"<stream id> <subscriber>"``).
        Raises the ``counted`` error (429 :class:`~rill.errors.TooManyStreams` or
        :class:`~rill.errors.TooManySubscribers`) over the per-client cap, and
        :class:`~rill.errors.Unavailable` (503) over the worker's.
        """
        if self.per_worker and self.total >= self.per_worker:
            raise Unavailable("This server is carrying as many answers as it can. "
                              "Please try again shortly.", retry_after=5)
        per_client = self.client_cap(cap)
        if per_client and not self._take_client_slot(key, stream_id, per_client):
            raise self.counted.error(self.counted.refusal.format(cap=per_client),
                                     retry_after=5)
        self.active[key] += 1
        self.total += 1
        return Slot(self, key, stream_id if per_client else "")

    def _take_client_slot(self, key: str, stream_id: str, cap: int) -> bool:
        return self.active[key] < cap

    def _release_client_slot(self, key: str, stream_id: str) -> None:
        pass


# Counts a client's streams across every worker and instance. One key per client, so the
# script runs on a Redis Cluster too: it drops the members the caller found gone (ARGV[4…]),
# then takes a slot if the client is under its cap.
_ACQUIRE = """
for i = 4, #ARGV do redis.call('ZREM', KEYS[1], ARGV[i]) end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], 86400)
return 1
"""


class RedisStreamCaps(StreamCaps):
    """:class:`StreamCaps` whose per-client count lives in Redis, shared by all instances.

    A slot counts while its stream is unfinished and its producing worker's lease lives (so a
    killed worker's streams free themselves), or, before its first events reach Redis (for a
    subscriber: always), for ``GRACE`` seconds after it was taken. Keys as in
    :mod:`rill.hub.redis_hub`. Under the cap a slot costs one round trip; at the cap the
    client's slots are checked first.
    Raises :class:`~rill.errors.HubUnavailable` when Redis cannot be reached.
    """

    GRACE = 60.0  # seconds a slot counts before its stream's lease exists

    def __init__(self, per_client: int, per_worker: int, redis_url: str,
                 counted: Counted = STREAMS, timeout: float = 2.0) -> None:
        from .hub import redis_io

        super().__init__(per_client, per_worker, counted)
        self._io, self._url, self._timeout = redis_io, redis_url, timeout
        self._released: list[tuple[str, str]] = []

    @functools.cached_property
    def redis(self) -> Any:
        """Made on first use (a cluster's client connects when it is made)."""
        return self._io.shared(self._url, self._timeout)

    @functools.cached_property
    def _acquire(self) -> Any:
        return self.redis.register_script(_ACQUIRE)

    @functools.cached_property
    def _batcher(self) -> Any:
        """A burst's slot checks share round trips with the hub's (:mod:`rill.hub.redis_batch`)."""
        from .hub.redis_batch import batcher

        return batcher(self.redis, self._timeout)

    def _take_client_slot(self, key: str, stream_id: str, cap: int) -> bool:
        caps_key = f"{self.counted.prefix}{key}"
        with self._io.guard():
            if self._batcher.call(self._acquire, [caps_key], [time.time(), cap, stream_id]):
                return True
            gone = self._gone(caps_key)
            return bool(gone) and bool(self._acquire(keys=[caps_key],
                                                     args=[time.time(), cap, stream_id,
                                                           *gone]))

    def _gone(self, caps_key: str) -> list[str]:
        """The client's slots whose stream is finished, or whose worker is gone."""
        io, now, young_count = self._io, time.time(), self.counted.young_count
        members = [(m.decode(), taken) for m, taken in
                   self.redis.zrange(caps_key, 0, -1, withscores=True)]
        pipe = self.redis.pipeline(transaction=False)
        for member, _ in members:
            pipe.hmget(io.meta_key(member.partition(" ")[0]), "finished", "worker")
        metas = pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        for _, worker in metas:
            pipe.exists(io.worker_key(worker.decode() if worker else "-"))
        alive = pipe.execute()
        return [member for (member, taken), (finished, _), lives
                in zip(members, metas, alive, strict=True)
                if not (finished == b"0" and lives)
                and not ((finished is None or young_count) and now - taken < self.GRACE)]

    def _release_client_slot(self, key: str, stream_id: str) -> None:
        """Queue the release: a generation may end in an event-loop callback, which must
        not wait on Redis. A greenlet writes the queue in one pipeline."""
        self._released.append((key, stream_id))
        if len(self._released) == 1:
            tasks.spawn(self._write_releases)

    def _write_releases(self) -> None:
        while self._released:
            batch, self._released = self._released, []
            # Redis away or refusing writes (guard() logs a refusal): the slot lapses with its
            # stream instead.
            with contextlib.suppress(HubUnavailable), self._io.guard():
                pipe = self.redis.pipeline(transaction=False)
                for key, stream_id in batch:
                    pipe.zrem(f"{self.counted.prefix}{key}", stream_id)
                pipe.execute()


class Slot:
    """One stream's place under the caps; :meth:`release` is idempotent."""

    def __init__(self, caps: StreamCaps, key: str, stream_id: str) -> None:
        self._caps: StreamCaps | None = caps
        self._key, self._stream_id = key, stream_id

    def release(self) -> None:
        caps, self._caps = self._caps, None
        if caps is None:
            return
        caps.total -= 1
        if self._stream_id:  # counted per client
            caps._release_client_slot(self._key, self._stream_id)
        caps.active[self._key] -= 1
        if caps.active[self._key] <= 0:
            del caps.active[self._key]
