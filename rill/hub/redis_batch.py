"""Batched Redis work: script calls from many greenlets, and the streams of the flusher and
the fetcher, one pipelined round trip per batch.

A call through a connection pool holds its connection from sending the command until its
greenlet runs again to read the reply: on a saturated worker, or while Redis stalls, that is
a whole loop iteration or more. So under a burst a pool of *n* serves about *n* calls per
iteration and the rest wait out ``RILL_REDIS_TIMEOUT_SECONDS`` (a bounded pool), or each
waiting call opens a connection (an unbounded one: 214 from one worker in
``tests/integration/test_redis_connections.py``). :class:`ScriptBatcher` queues each call
and one greenlet sends every queued call in one write on a connection it holds (``EVALSHA``
each; a script Redis lost is loaded again and the batch sent once more), handing each reply
back; calls queued meanwhile go in the next write, as the hub's flusher does for events.
One connection, however many calls wait. Used for the stream caps' slots and flask-limiter's counts
(:mod:`rill.limit_storage`); measured in ``bench/PROFILE.md``, "Redis connections".
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import gevent
import gevent.event
import redis

from .. import tasks
from .memory import Stream
from .redis_io import HeldConnection

Call = tuple[Any, Sequence[Any], Sequence[Any], gevent.event.AsyncResult]


class ScriptBatcher:
    """Runs ``redis.commands.core.Script`` calls for ``client`` (a ``redis.Redis``), batched
    under gevent; directly outside it, or for a ``redis.RedisCluster`` (whose pipelines
    split by slot). ``timeout``: the client's reply timeout in seconds
    (``RILL_REDIS_TIMEOUT_SECONDS``); a call waits three times it for its reply (the round
    trip, and its turns in a busy event loop), past it ``redis.TimeoutError``. A reply
    that is an error is raised in its caller."""

    def __init__(self, client: Any, timeout: float) -> None:
        self.client, self.timeout = client, 3 * timeout
        self._direct = isinstance(client, redis.RedisCluster)
        self._queued: list[Call] = []
        self._sender: gevent.Greenlet | None = None
        self._held = HeldConnection(client)  # the sender's (connected when first used)

    def call(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """``script(keys=keys, args=args)``, its reply; raises a ``redis.RedisError``."""
        if self._direct or not tasks.cooperative():
            return script(keys=keys, args=args, client=self.client)
        reply = gevent.event.AsyncResult()
        self._queued.append((script, keys, args, reply))
        if self._sender is None or self._sender.dead:
            self._sender = gevent.spawn(self._send)
        reply.wait(self.timeout)  # returns the value, which may be falsy
        if not reply.ready():
            raise redis.TimeoutError("no reply from Redis in time")
        return reply.get()

    def _send(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                replies = self._pipeline(batch)
                lost = {id(s): s for (s, *_), r in zip(batch, replies, strict=True)
                        if isinstance(r, redis.exceptions.NoScriptError)}
                if lost:
                    for script in lost.values():
                        self.client.script_load(script.script)
                    replies = self._pipeline(batch)
            except Exception as exc:  # Redis away: every call of the batch fails alike
                replies = [exc] * len(batch)
            for (*_, reply), value in zip(batch, replies, strict=True):
                if isinstance(value, Exception):
                    reply.set_exception(value)
                else:
                    reply.set(value)

    def _pipeline(self, batch: list[Call]) -> list[Any]:
        return self._held.round_trip([("EVALSHA", script.sha, len(keys), *keys, *args)
                                      for script, keys, args, _ in batch])


class StreamBatcher:
    """Work on marked streams in batches, in one task (a greenlet, or a thread outside
    gevent) started on the first mark: streams marked while a batch is out go in the next,
    and batches start at least ``interval`` seconds apart (the first after an idle spell at
    once). Subclasses do the batch's work in :meth:`work` (``{stream id: stream}``); the
    hub's :class:`~rill.hub.redis_flush.Flusher` and :class:`~rill.hub.redis_fetch.Fetcher`
    are two."""

    interval = 0.0

    def __init__(self) -> None:
        self.marked: dict[str, Stream] = {}
        self.busy = False  # a batch is out
        self._wake = tasks.event()
        self._task: tasks.Task | None = None

    def mark(self, stream_id: str, stream: Stream) -> None:
        """Put ``stream`` in the next batch."""
        if not self.marked:
            self._wake.set()
            if self._task is None or self._task.dead:
                self._task = tasks.spawn(self._run)
        self.marked[stream_id] = stream

    def work(self, batch: dict[str, Stream]) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        last = -self.interval
        while True:
            self._wake.wait()
            self._wake.clear()
            while self.marked:
                if (wait := last + self.interval - time.monotonic()) > 0:
                    tasks.sleep(wait)  # more streams ride this batch
                last = time.monotonic()
                batch, self.marked = self.marked, {}
                self.busy = True
                try:
                    self.work(batch)
                finally:
                    self.busy = False
