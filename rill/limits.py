"""Limits on what one client, and one worker, may ask of Rill.

Two kinds: request *rates* (flask-limiter, ``RILL_RATE_LIMIT``) and streams *in flight*
(:class:`StreamCaps`, ``RILL_MAX_STREAMS_PER_CLIENT`` and ``RILL_MAX_STREAMS``), which a
rate limiter cannot count; with Redis the per-client count is shared by every instance
(:class:`RedisStreamCaps`). Both key a client by its address: ``request.remote_addr``, which
is the real client only because ``ProxyFix`` rewrites it when ``RILL_PROXY_HOPS`` > 0.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from typing import Any

from flask import current_app, request
from flask_limiter import Limiter

from .errors import HubUnavailable, TooManyStreams, Unavailable


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


limiter = Limiter(key_func=client_key)


class StreamCaps:
    """Counts streams in flight per client and in this worker; 0 as a cap means unlimited."""

    def __init__(self, per_client: int, per_worker: int) -> None:
        self.per_client = per_client
        self.per_worker = per_worker
        self.active: Counter[str] = Counter()
        self.total = 0

    def acquire(self, key: str, stream_id: str = "", cap: int | None = None) -> Slot:
        """Take a slot for ``key``; release it with :meth:`Slot.release` when the stream ends.

        Raises :class:`~rill.errors.TooManyStreams` (429) over the per-client cap, and
        :class:`~rill.errors.Unavailable` (503) over the worker's.
        """
        if self.per_worker and self.total >= self.per_worker:
            raise Unavailable("This server is carrying as many answers as it can. "
                              "Please try again shortly.", retry_after=5)
        per_client = self.per_client if cap is None else cap
        if per_client and not self._take_client_slot(key, stream_id, per_client):
            raise TooManyStreams(
                f"You already have {per_client} answers streaming; wait for one to "
                "finish and try again.", retry_after=5)
        self.active[key] += 1
        self.total += 1
        return Slot(self, key, stream_id)

    def _take_client_slot(self, key: str, stream_id: str, cap: int) -> bool:
        return self.active[key] < cap

    def _release_client_slot(self, key: str, stream_id: str) -> None:
        pass


# Counts a client's streams across every worker and instance: a stream counts while it is
# unfinished and its producing worker's lease lives (so a killed worker's streams free
# themselves) or, before its first events reach Redis, for GRACE seconds after the slot was
# taken. Keys as in rill.hub.redis_hub.
_ACQUIRE = """
local now, cap, grace = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
local live = 0
for i = 1, #members, 2 do
  local id, taken = members[i], tonumber(members[i + 1])
  local meta = redis.call('HMGET', 'rill:{' .. id .. '}:meta', 'finished', 'worker')
  local opened = meta[1] ~= false
  local leased = meta[1] == '0'
    and redis.call('EXISTS', 'rill:worker:' .. meta[2]) == 1
  if leased or (not opened and now - taken < grace) then
    live = live + 1
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
if live >= cap then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('EXPIRE', KEYS[1], 86400)
return 1
"""


class RedisStreamCaps(StreamCaps):
    """:class:`StreamCaps` whose per-client count lives in Redis, shared by all instances.

    Raises :class:`~rill.errors.HubUnavailable` when Redis cannot be reached.
    """

    GRACE = 60.0  # seconds a slot counts before its stream's lease exists

    def __init__(self, per_client: int, per_worker: int, redis_url: str) -> None:
        import redis

        super().__init__(per_client, per_worker)
        self._redis_errors = (redis.ConnectionError, redis.TimeoutError)
        self.redis = redis.Redis.from_url(redis_url, socket_connect_timeout=2.0,
                                          socket_timeout=5.0)
        self._acquire = self.redis.register_script(_ACQUIRE)

    def _take_client_slot(self, key: str, stream_id: str, cap: int) -> bool:
        try:
            return bool(self._acquire(keys=[f"rill:caps:{key}"],
                                      args=[time.time(), cap, stream_id, self.GRACE]))
        except self._redis_errors as exc:
            raise HubUnavailable() from exc

    def _release_client_slot(self, key: str, stream_id: str) -> None:
        with contextlib.suppress(*self._redis_errors):
            self.redis.zrem(f"rill:caps:{key}", stream_id)


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
        caps._release_client_slot(self._key, self._stream_id)
        caps.active[self._key] -= 1
        if caps.active[self._key] <= 0:
            del caps.active[self._key]
