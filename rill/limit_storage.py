"""flask-limiter's Redis storage for a gevent worker: the rate-limit checks of one event-loop
turn share one pipelined round trip on one connection
(:class:`~rill.hub.redis_batch.Batcher`).

``limits``' own Redis storage holds a pooled connection per check until its greenlet reads
the reply: under bench's `held` burst one worker opened 107 connections, and redis-py ≥ 7,
refusing past 100 with "Too many connections", made those checks fail open
(`bench/PROFILE.md`, "Redis connections"). Only the fixed window's ``incr`` (Rill's
strategy) is batched; the rest is ``limits``' own.
"""

from __future__ import annotations

from typing import Any

from limits.storage import RedisStorage

from .hub.redis_batch import Batcher

SCHEME_PREFIX = "rill+"


def storage_uri(uri: str) -> str:
    """The storage URI Rill's limiter uses for ``uri``: this storage for one Redis
    (``redis://``, ``rediss://``), ``uri`` itself for anything else (a cluster, Sentinel, a
    socket, memory)."""
    return SCHEME_PREFIX + uri if uri.split("://", 1)[0] in ("redis", "rediss") else uri


class PipelinedRedisStorage(RedisStorage):
    """``limits``' :class:`~limits.storage.RedisStorage` whose ``incr`` is pipelined across
    the greenlets of a turn. Registered (``limits``' storage registry) as ``rill+redis://``
    and ``rill+rediss://``; options as ``RedisStorage``'s (``socket_timeout``, seconds,
    also bounds a check's wait: three times it). Raises what ``RedisStorage`` raises: a
    ``redis.RedisError`` when Redis cannot be reached (flask-limiter's ``swallow_errors``
    then lets the request through)."""

    STORAGE_SCHEME = ["rill+redis", "rill+rediss"]  # noqa: RUF012 (as limits declares it)

    def __init__(self, uri: str, **options: Any) -> None:
        super().__init__(uri.removeprefix(SCHEME_PREFIX), **options)
        self._batcher = Batcher(self.storage, float(options.get("socket_timeout") or 5))

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return int(self._batcher.call(self.lua_incr_expire, [self.prefixed_key(key)],
                                      [expiry, amount]))
