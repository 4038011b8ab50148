"""The Redis hub's connections to Redis, a fixed number per worker whatever the streams:

- :func:`connect`: the client for one Redis or a Redis Cluster (``redis+cluster://``), with a
  blocking pool of ``POOL_SIZE`` connections for requests (remote reads, owner checks).
- :class:`Flusher`: one greenlet writing every stream's new records in one pipelined round
  trip per flush, then one ``PUBLISH`` naming the streams it wrote.
- :class:`Listener`: one pub/sub connection for cancels and leaves meant for producers here,
  and the flush notices of workers whose streams are followed here (local fan-out).
- :class:`Heartbeat`: one native thread renewing this worker's lease key, so a worker whose
  event loop is busy keeps its streams.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import gevent
import orjson
import redis
from gevent import monkey

from .. import tasks
from ..errors import HubUnavailable
from . import TERMINAL
from .memory import MemoryHub, Stream

log = logging.getLogger(__name__)

POOL_SIZE = 32  # request-time connections per worker (a request waits for a free one)
SIGNAL_CHANNEL = "rill:signal"
# Redis away, or a cluster without a quorum or a node for a slot (RedisClusterException is
# not a RedisError: no startup node answered).
ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.cluster.ClusterError,
          redis.exceptions.RedisClusterException)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Redis unreachable (or a cluster without a quorum) becomes :class:`HubUnavailable`."""
    try:
        yield
    except ERRORS as exc:
        raise HubUnavailable() from exc


def connect(url: str, *, pool_size: int = POOL_SIZE, socket_timeout: float | None = 10.0,
            **options: Any) -> Any:
    """A client for ``url``: ``redis://`` / ``rediss://`` / ``unix://`` for one Redis, or
    ``redis+cluster://host:port[,host:port…]`` (``rediss+cluster://`` with TLS) for a
    Redis Cluster, the scheme ``limits`` (flask-limiter's storage) uses for one too."""
    options = {"socket_connect_timeout": 2.0, "socket_timeout": socket_timeout, **options}
    scheme = urlsplit(url).scheme
    if scheme.endswith("+cluster"):
        parts = urlsplit(url)
        hosts = parts.netloc.rsplit("@", 1)[-1].split(",")
        nodes = [redis.cluster.ClusterNode(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1]))
                 for h in hosts]
        auth = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
        user, _, password = auth.rpartition(":")
        return redis.RedisCluster(
            startup_nodes=nodes, ssl=scheme.startswith("rediss"), username=user or None,
            password=password or None, max_connections=pool_size,
            connection_pool_class=redis.BlockingConnectionPool, **options)
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=pool_size,
                                                 timeout=5.0, **options)
    return redis.Redis(connection_pool=pool)


def disconnect(client: Any) -> None:
    """Close every connection of a client from :func:`connect` (it owns its pool)."""
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        pool.disconnect()
    client.close()


def execute(client: Any, pipe: Any, publish: tuple[str, str] | None = None,
            **options: Any) -> list[Any]:
    """Run ``pipe`` and ``PUBLISH`` ``publish`` (channel, message) in the same round trip;
    a cluster pipeline cannot carry a ``PUBLISH``, so there it follows the pipeline."""
    cluster = isinstance(client, redis.RedisCluster)
    if publish is not None and not cluster:
        pipe.publish(*publish)
    results: list[Any] = pipe.execute(**options)
    if publish is not None and cluster:
        client.publish(*publish)
    return results


def events_key(stream_id: str) -> str:
    return f"rill:{{{stream_id}}}:events"


def meta_key(stream_id: str) -> str:
    return f"rill:{{{stream_id}}}:meta"


def subs_key(stream_id: str) -> str:
    return f"rill:{{{stream_id}}}:subs"


def worker_key(worker: str) -> str:
    return f"rill:worker:{worker}"


def notice_channel(worker: str) -> str:
    return f"rill:notice:{worker}"


class Flusher:
    """Writes what producers here appended: every flush is one pipeline for all the streams
    with new records (one ``XADD`` each, its entry holding those records), and one
    ``PUBLISH`` of their ids on this worker's notice channel. Records appended during a round
    trip go in the next one, so a slow Redis gets fewer, larger flushes."""

    def __init__(self, hub: Any, local: MemoryHub) -> None:
        self.hub, self.local = hub, local
        self.dirty: dict[str, Stream] = {}
        self._wake = tasks.event()
        self._task: tasks.Task | None = None
        self.busy = False

    def mark(self, stream_id: str, stream: Stream) -> None:
        """``stream`` has records to write (called by :meth:`MemoryHub.append`)."""
        if not self.dirty:
            self._wake.set()
            if self._task is None or self._task.dead:
                self._task = tasks.spawn(self._run)
        self.dirty[stream_id] = stream

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self.dirty:
                batch, self.dirty = self.dirty, {}
                self.busy = True
                try:
                    self._write(batch)
                except Exception:
                    log.exception("the Redis flush failed")
                    self._fail(batch)
                finally:
                    self.busy = False

    def _write(self, batch: dict[str, Stream]) -> None:
        hub, now = self.hub, time.monotonic()
        pipe = hub.redis.pipeline(transaction=False)
        plan: list[tuple[str, Stream, int, int]] = []  # stream, its end, its XADD's index
        for stream_id, stream in batch.items():
            start, end = stream.sent_end, stream.end
            if stream.failed or start >= end:
                continue
            events = f"rill:{{{stream_id}}}:events"  # events_key, inline: once per stream
            terminal = stream.records[-1][1] in TERMINAL
            if start == 0 or terminal:
                meta = meta_key(stream_id)
            if start == 0:
                pipe.hset(meta, mapping={"owner": stream.owner or "", "worker": hub.worker,
                                         "finished": 0, "cancel": 0})
                pipe.expire(meta, hub.live_ttl)
            # Never more than a stream keeps (the older ones were never readable here).
            records = stream.records[max(start - stream.first_id,
                                         len(stream.records) - hub.max_events):]
            plan.append((stream_id, stream, end, len(pipe.command_stack)))
            # XADD straight (redis-py's xadd() checks its keywords per call): one entry for
            # this flush's records; past RILL_STREAM_MAX_EVENTS, trimmed to the entries
            # holding the last of them.
            trim = () if end <= hub.max_events else ("MINID", "=",
                                                      f"0-{end - hub.max_events + 1}")
            pipe.execute_command("XADD", events, *trim, f"0-{end}", "d",
                                 orjson.dumps(records))
            if terminal:
                pipe.hset(meta, "finished", 1)
                for key in (events, meta, subs_key(stream_id)):
                    pipe.expire(key, hub.ttl)
            elif start == 0:
                pipe.expire(events, hub.live_ttl)
            stream.sent_end = end
        if not plan:
            return
        notice = (notice_channel(hub.worker), " ".join(p[0] for p in plan))
        try:
            results = execute(hub.redis, pipe, notice, raise_on_error=False)
        except ERRORS as exc:
            if hub.healthy:
                log.warning("Redis is unreachable (%r): %d streams end with hub_unavailable",
                            exc, len(plan))
            hub.healthy = False
            self._fail({p[0]: p[1] for p in plan})
            return
        hub.healthy, hub.beat_at = True, now
        for stream_id, stream, end, index in plan:
            if isinstance(results[index], Exception):  # e.g. a producer_lost took the id
                log.warning("stream %s: Redis refused its events (%s)", stream_id[:6],
                            results[index])
                self._fail({stream_id: stream})
            else:
                self.local.made_durable(stream, end)

    def _fail(self, batch: dict[str, Stream]) -> None:
        for stream_id, stream in batch.items():
            self.local.fail(stream)
            self.local.signal(stream_id)  # its producer stops: cancel_requested raises


class Listener:
    """One pub/sub connection per worker, its messages fanned out here.

    On ``rill:signal``: ``c <id>`` (cancel), ``j <id> <subscriber> <lapses>`` (a subscriber
    elsewhere joined or renewed), ``l <id> <subscriber>`` (it left), acted on for streams
    produced here. On ``rill:notice:<worker>``: the ids a worker just flushed, waking the
    subscribers here that follow those streams. After a reconnect it reloads what a lost
    message could have said (cancel flags, remote subscribers) and wakes every follower.
    """

    def __init__(self, hub: Any, local: MemoryHub) -> None:
        self.hub, self.local = hub, local
        self.follows: dict[str, tuple[str, Stream, set[str]]] = {}  # stream: worker, …
        self.channels: dict[str, int] = {}  # notice channel: streams followed on it
        self._pubsub: Any = None
        self._task: tasks.Task | None = None
        self._stopped = False

    def start(self) -> None:
        if self._task is None or self._task.dead:
            self._task = tasks.spawn(self._run)

    def follow(self, stream_id: str, worker: str, subscriber: str) -> Stream:
        """Wake the returned stream's ``changed`` whenever ``worker`` flushes ``stream_id``."""
        self.start()
        entry = self.follows.get(stream_id)
        if entry is None:
            entry = self.follows[stream_id] = (worker, Stream(None, self.local._event), set())
            channel = notice_channel(worker)
            self.channels[channel] = self.channels.get(channel, 0) + 1
            if self.channels[channel] == 1 and self._pubsub is not None:
                with contextlib.suppress(*ERRORS):
                    self._pubsub.subscribe(channel)
        entry[2].add(subscriber)
        return entry[1]

    def unfollow(self, stream_id: str, subscriber: str) -> None:
        entry = self.follows.get(stream_id)
        if entry is None:
            return
        entry[2].discard(subscriber)
        if entry[2]:
            return
        del self.follows[stream_id]
        channel = notice_channel(entry[0])
        self.channels[channel] -= 1
        if not self.channels[channel]:
            del self.channels[channel]
            if self._pubsub is not None:
                with contextlib.suppress(*ERRORS):
                    self._pubsub.unsubscribe(channel)

    def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.stop(unblock=self._close, timeout=1.0)
        self._close()

    def _close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def _run(self) -> None:
        while not self._stopped:
            try:
                pubsub = self.hub.signals.pubsub()
                pubsub.subscribe(SIGNAL_CHANNEL, *self.channels)
                self._pubsub = pubsub
                self._resync()
                for message in pubsub.listen():
                    self._on_message(message)
            except Exception as exc:
                self._pubsub = None
                if self._stopped:
                    return
                if not isinstance(exc, ERRORS):
                    log.exception("the Redis listener failed")
                tasks.sleep(1.0)  # Redis is away; flushes fail and say so meanwhile

    def _on_message(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        if message["type"] == "subscribe":  # now live: look again, in case one was missed
            for worker, stream, _ in list(self.follows.values()):
                if notice_channel(worker) == channel:
                    self.local.wake(stream)
            return
        if message["type"] != "message":
            return
        words = message["data"].decode().split()
        if channel != SIGNAL_CHANNEL:
            for stream_id in words:
                entry = self.follows.get(stream_id)
                if entry is not None:
                    self.local.wake(entry[1])
            return
        produced = self.local.get(words[1]) if len(words) > 1 else None
        if produced is None or produced.finished:
            return
        if words[0] == "c":
            produced.cancel = True
        elif words[0] == "j" and len(words) == 4:
            produced.remote[words[2]] = float(words[3])
        elif words[0] == "l" and len(words) == 3:
            produced.remote.pop(words[2], None)
        self.local.signal(words[1])

    def _resync(self) -> None:
        """Reload cancel flags and remote subscribers of the live streams produced here."""
        live = [(k, s) for k, s in self.local.streams.items() if not s.finished]
        if live:
            pipe = self.hub.redis.pipeline(transaction=False)
            now = time.time()
            for stream_id, _ in live:
                pipe.hget(meta_key(stream_id), "cancel")
                pipe.zrangebyscore(subs_key(stream_id), now, "+inf", withscores=True)
            replies = pipe.execute()
            for i, (stream_id, stream) in enumerate(live):
                stream.cancel = stream.cancel or replies[2 * i] == b"1"
                stream.remote = {m.decode(): score for m, score in replies[2 * i + 1]}
                self.local.signal(stream_id)
        for _, stream, _ in list(self.follows.values()):
            self.local.wake(stream)


class Heartbeat:
    """Renews ``rill:worker:<id>`` (``PX`` ``ttl``) every ``every`` seconds from a native
    thread with its own connection: a greenlet kept busy, or thousands of streams' work,
    cannot delay it past the lease. Under gevent the thread runs its own gevent hub for its
    socket, and waits between beats on a real lock, which :meth:`stop` releases; every
    heartbeat is stopped, and its thread waited for, at interpreter exit."""

    def __init__(self, url: str, worker: str, every: float, ttl_ms: int) -> None:
        self.key, self.every, self.ttl_ms, self.url = worker_key(worker), every, ttl_ms, url
        self.beats = 0
        self.stopped = False
        self._wake, self._done = _lock(), _lock()
        self._wake.acquire()
        self._done.acquire()
        _HEARTBEATS.add(self)
        start = monkey.get_original("_thread", "start_new_thread") if tasks.cooperative() \
            else _start_daemon
        start(self._run, ())

    def _run(self) -> None:
        try:
            client = connect(self.url, pool_size=2, socket_timeout=max(self.every, 0.5))
            while not self.stopped:
                started = time.monotonic()
                try:
                    client.set(self.key, 1, px=self.ttl_ms)
                    self.beats += 1
                except ERRORS:
                    pass  # Redis is away: the lease lapses, as it should
                except Exception:
                    log.exception("the worker's heartbeat failed")
                self._wake.acquire(timeout=max(self.every - (time.monotonic() - started),
                                               0.01))
            disconnect(client)
            if tasks.cooperative():
                gevent.get_hub().destroy(destroy_loop=True)  # this thread's own
        finally:
            self._done.release()

    def stop(self, wait: float = 0.0) -> None:
        """Stop renewing (the lease then lapses); wait up to ``wait`` s for the thread."""
        if not self.stopped:
            self.stopped = True
            self._wake.release()
        if wait and self._done.acquire(timeout=wait):
            self._done.release()


_lock = monkey.get_original("_thread", "allocate_lock")
_HEARTBEATS: weakref.WeakSet[Heartbeat] = weakref.WeakSet()


@atexit.register
def _stop_heartbeats() -> None:
    """A native thread still in its gevent hub while the interpreter finalises can crash it."""
    for heartbeat in list(_HEARTBEATS):
        heartbeat.stop(wait=2.0)


def _start_daemon(target: Callable[[], None], args: tuple[()]) -> None:
    threading.Thread(target=target, daemon=True, name="rill-heartbeat").start()
