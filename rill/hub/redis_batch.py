"""Batched Redis work: commands and script calls from many greenlets, and the streams of
the flusher and the fetcher, one pipelined round trip per batch.

A call through a connection pool holds its connection from sending the command until its
greenlet runs again to read the reply: on a saturated worker, or while Redis stalls, that is
a whole loop iteration or more. So under a burst a pool of *n* serves about *n* calls per
iteration and the rest wait out ``RILL_REDIS_TIMEOUT_SECONDS`` (a bounded pool), or each
waiting call opens a connection (an unbounded one: 214 from one worker in
``tests/integration/test_redis_connections.py``). :class:`Batcher` queues each call and one
greenlet sends every queued call in one write on a connection it holds (a script as
``EVALSHA``; one Redis lost is loaded again and the batch sent once more), handing each
caller its replies; calls queued meanwhile go in the next write, as the hub's flusher does
for events. One connection, however many calls wait. Used for the Redis hub's request-time
commands (owner, state, join, leave, cancel, catch-up reads: 2,000 second tabs joining at
once on one worker got 503 ``hub_unavailable`` from a pool of 32), the stream caps' slots
and flask-limiter's counts (:mod:`rill.limit_storage`); measured in ``bench/PROFILE.md``,
"Redis connections" and "A join storm".
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Sequence
from typing import Any

import gevent
import gevent.event
import redis

from .. import tasks
from .memory import Stream
from .redis_io import HeldConnection, pipelined, with_publish

# A caller's commands, the script of each (``None``: a plain command) and its replies.
Call = tuple[list[tuple[Any, ...]], list[Any], gevent.event.AsyncResult]


class Batcher:
    """Runs Redis commands and ``redis.commands.core.Script`` calls for ``client`` (a
    ``redis.Redis``), each caller's in one round trip with every other greenlet's waiting
    then (the module's docstring); directly outside gevent, or for a ``redis.RedisCluster``
    (a pipeline per caller, split by slot). ``timeout``: the client's reply timeout in
    seconds (``RILL_REDIS_TIMEOUT_SECONDS``); a caller waits three times it for its replies
    (the round trip, and its turns in a busy event loop), past it ``redis.TimeoutError``.
    :func:`batcher` gives the one of a client."""

    def __init__(self, client: Any, timeout: float) -> None:
        self.client, self.timeout = client, 3 * timeout
        self._direct = isinstance(client, redis.RedisCluster)
        self._queued: list[Call] = []
        self._sender: gevent.Greenlet | None = None
        self._held = HeldConnection(client)  # the sender's (connected when first used)

    def call(self, script: Any, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """``script(keys=keys, args=args)``, its reply; raises a ``redis.RedisError`` (the
        error Redis answered, too)."""
        if self._direct or not tasks.cooperative():
            return script(keys=keys, args=args, client=self.client)
        return _raised(self._queue([("EVALSHA", script.sha, len(keys), *keys, *args)],
                                   [script]))[0]

    def run(self, commands: list[tuple[Any, ...]],
            publish: tuple[str, str] | None = None) -> list[Any]:
        """Each of ``commands``' replies (as Redis sent them: bytes, ints, lists; redis-py's
        parsed forms on a cluster), then ``PUBLISH`` ``publish`` (channel, message). Raises
        a ``redis.RedisError``: the first error Redis answered, or Redis unreachable."""
        if self._direct or not tasks.cooperative():
            return pipelined(self.client, commands, publish)
        every = with_publish(commands, publish)
        return _raised(self._queue(every, [None] * len(every)))[:len(commands)]

    def _queue(self, commands: list[tuple[Any, ...]], scripts: list[Any]) -> list[Any]:
        reply = gevent.event.AsyncResult()
        self._queued.append((commands, scripts, reply))
        if self._sender is None or self._sender.dead:
            self._sender = gevent.spawn(self._send)
        reply.wait(self.timeout)  # returns the value, which may be falsy
        if not reply.ready():
            raise redis.TimeoutError("no reply from Redis in time")
        return reply.get()  # type: ignore[no-any-return]

    def _send(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                replies = self._round_trip(batch)
                lost = {id(s): s for (_, scripts, _), rs in zip(batch, replies, strict=True)
                        for s, r in zip(scripts, rs, strict=True)
                        if s is not None and isinstance(r, redis.exceptions.NoScriptError)}
                if lost:
                    for script in lost.values():
                        self.client.script_load(script.script)
                    replies = self._round_trip(batch)
            except Exception as exc:  # Redis away: every call of the batch fails alike
                for *_, reply in batch:
                    reply.set_exception(exc)
                continue
            for (*_, reply), value in zip(batch, replies, strict=True):
                reply.set(value)

    def _round_trip(self, batch: list[Call]) -> list[list[Any]]:
        """Every call's commands in one write; each call's replies."""
        replies = self._held.round_trip([c for commands, _, _ in batch for c in commands])
        split, at = [], 0
        for commands, _, _ in batch:
            split.append(replies[at:at + len(commands)])
            at += len(commands)
        return split


def _raised(replies: list[Any]) -> list[Any]:
    """``replies``, unless one is an error Redis answered: then that is raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


_batchers: weakref.WeakKeyDictionary[Any, Batcher] = weakref.WeakKeyDictionary()


def batcher(client: Any, timeout: float) -> Batcher:
    """``client``'s one :class:`Batcher` (made on first use): the hub's request-time calls
    and the stream caps' share its round trips and its one connection."""
    made = _batchers.get(client)
    if made is None:
        made = _batchers[client] = Batcher(client, timeout)
    return made


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
