"""Limits on what one client, and one worker, may ask of Rill.

Two kinds: request *rates* (flask-limiter, ``RILL_RATE_LIMIT``) and streams *in flight*
(:class:`StreamCaps`, ``RILL_MAX_STREAMS_PER_CLIENT`` and ``RILL_MAX_STREAMS``), which a
rate limiter cannot count. Both key a client by its address: ``request.remote_addr``, which
is the real client only because ``ProxyFix`` rewrites it when ``RILL_PROXY_HOPS`` > 0.
"""

from __future__ import annotations

from collections import Counter

from flask import current_app, request
from flask_limiter import Limiter

from .errors import TooManyStreams, Unavailable


def client_key() -> str:
    """Return the key a client's limits are counted under: its address."""
    return request.remote_addr or "unknown"


def rate_limit() -> str:
    return str(current_app.config["RILL_RATE_LIMIT"])


limiter = Limiter(key_func=client_key)


class StreamCaps:
    """Counts streams in flight per client and in this worker; 0 as a cap means unlimited."""

    def __init__(self, per_client: int, per_worker: int) -> None:
        self.per_client = per_client
        self.per_worker = per_worker
        self.active: Counter[str] = Counter()
        self.total = 0

    def acquire(self, key: str) -> Slot:
        """Take a slot for ``key``; release it with :meth:`Slot.release` when the stream ends.

        Raises :class:`~rill.errors.TooManyStreams` (429) over the per-client cap, and
        :class:`~rill.errors.Unavailable` (503) over the worker's.
        """
        if self.per_worker and self.total >= self.per_worker:
            raise Unavailable("This server is carrying as many answers as it can. "
                              "Please try again shortly.", retry_after=5)
        if self.per_client and self.active[key] >= self.per_client:
            raise TooManyStreams(
                f"You already have {self.per_client} answers streaming; wait for one to "
                "finish and try again.", retry_after=5)
        self.active[key] += 1
        self.total += 1
        return Slot(self, key)


class Slot:
    """One stream's place under the caps; :meth:`release` is idempotent."""

    def __init__(self, caps: StreamCaps, key: str) -> None:
        self._caps: StreamCaps | None = caps
        self._key = key

    def release(self) -> None:
        caps, self._caps = self._caps, None
        if caps is None:
            return
        caps.total -= 1
        caps.active[self._key] -= 1
        if caps.active[self._key] <= 0:
            del caps.active[self._key]
