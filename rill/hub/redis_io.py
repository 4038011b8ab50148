"""The Redis hub's connections to Redis, a fixed number per worker whatever the streams:

- :func:`shared`: the worker's one request-time client (:func:`connect`: one Redis or a Redis
  Cluster, ``redis+cluster://``), a blocking pool of ``POOL_SIZE`` connections that the hub
  (owner checks, cancels, remote catch-up reads) and the stream caps share.
- :class:`~rill.hub.redis_flush.Flusher`: one greenlet writing every stream's new records in
  one pipelined round trip per flush, then one ``PUBLISH`` naming the streams it wrote, on a
  connection of its own: a burst of requests waiting for the shared pool never delays a
  flush.
- :class:`~rill.hub.redis_fetch.Fetcher`: one greenlet reading, on a connection of its own,
  the new records of every stream followed here that a flush notice named, in one
  pipelined round trip.
- :class:`~rill.hub.redis_listener.Listener`: one pub/sub connection for cancels and leaves
  meant for producers here, and the flush notices of workers whose streams are followed here.
- :class:`~rill.hub.heartbeat.Heartbeat`: one native thread renewing this worker's lease key,
  so a worker whose event loop is busy keeps its streams.
"""

from __future__ import annotations

import contextlib
import logging
import os
import weakref
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import HubUnavailable

log = logging.getLogger(__name__)

POOL_SIZE = 32  # request-time connections per worker (a request waits for a free one)
SIGNAL_CHANNEL = "rill:signal"
# Redis away; refusing every write for now (full at its maxmemory with the noeviction
# policy: OOM; a replica, after a failover: READONLY); or a cluster without a quorum or a
# node for a slot (RedisClusterException is not a RedisError: no startup node answered).
ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.OutOfMemoryError,
          redis.exceptions.ReadOnlyError, redis.cluster.ClusterError,
          redis.exceptions.RedisClusterException)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Redis unreachable or refusing writes (:data:`ERRORS`) becomes :class:`HubUnavailable`,
    and so does any other error Redis answers (``MISCONF`` when its snapshots fail, ``NOPERM``
    from its ACLs): a request fails with a 503, never a 500. The latter are logged, with
    Redis's own words (which hold no secret)."""
    try:
        yield
    except ERRORS as exc:
        raise HubUnavailable() from exc
    except redis.ResponseError as exc:
        log.warning("Redis refused a command: %s", exc)
        raise HubUnavailable() from exc


def connect(url: str, timeout: float, *, pool_size: int = POOL_SIZE, again: bool = True,
            **options: Any) -> Any:
    """A client for ``url``: ``redis://`` / ``rediss://`` / ``unix://`` for one Redis, or
    ``redis+cluster://host:port[,host:port…]`` (``rediss+cluster://`` with TLS) for a
    Redis Cluster, the scheme ``limits`` (flask-limiter's storage) uses for one too.

    ``timeout`` (seconds, ``RILL_REDIS_TIMEOUT_SECONDS``) bounds connecting, each reply
    (``socket_timeout``, which ``options`` may override: None for a pub/sub connection)
    and the wait for a free connection of the pool; past it, redis-py raises an error
    in :data:`ERRORS`. ``again``: a command that finds its connection closed is sent once
    more on a new one (below); off for a pub/sub client, whose owner must see the break."""
    options = {"socket_connect_timeout": timeout, "socket_timeout": timeout, **options}
    if urlsplit(url).scheme.endswith("+cluster"):
        return redis.RedisCluster(**cluster_options(url, pool_size), timeout=timeout, **options)
    # A pooled connection Redis closed while it sat idle (a restart, a failover, Redis's
    # idle `timeout`) is made again once, at once: the pool's check before lending it does
    # not see the close over TLS, and a pool from a URL retries nothing. An outage still
    # fails at once (the second connect is refused), a hung Redis after one timeout.
    options = {"retry": Retry(NoBackoff(), 1 if again else 0,
                              supported_errors=(redis.ConnectionError,)),
               "retry_on_error": [redis.ConnectionError], **options}
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=pool_size,
                                                 timeout=timeout, **options)
    return redis.Redis(connection_pool=pool)


def cluster_options(url: str, pool_size: int = POOL_SIZE) -> dict[str, Any]:
    """``redis.RedisCluster`` keywords for ``redis+cluster://[user:password@]host:port[,…]``
    (``rediss+cluster://``: TLS): every node a startup node, and a blocking pool of
    ``pool_size`` connections per node. The first node goes as ``url``: redis-py uses
    ``connection_pool_class`` only then, else each node gets a pool that raises "Too many
    connections" past its size instead of waiting."""
    parts = urlsplit(url)
    auth, _, hosts = parts.netloc.rpartition("@")
    first, *others = hosts.split(",")
    scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
    return {"url": f"{scheme}://{auth + '@' if auth else ''}{first}",
            "startup_nodes": [redis.cluster.ClusterNode(h.rsplit(":", 1)[0],
                                                        int(h.rsplit(":", 1)[1]))
                              for h in others],
            "max_connections": pool_size,
            "connection_pool_class": redis.BlockingConnectionPool}


_shared: dict[tuple[str, float], Any] = {}


def shared(url: str, timeout: float) -> Any:
    """The process's request-time client for ``url`` (:func:`connect`, ``POOL_SIZE``
    connections), made on first use and kept: the hub and the stream caps of every app in
    the process share it, so a worker holds at most ``POOL_SIZE`` of them however many
    requests wait (each waits up to ``timeout`` s for a free one). A pool
    made before a fork resets itself in the child (redis-py checks the pid). Raises what
    :func:`connect` raises (a cluster client connects when made; nothing is kept then)."""
    key = (url, timeout)
    client = _shared.get(key)
    if client is None:
        client = _shared[key] = connect(url, timeout)
    return client


def disconnect(client: Any) -> None:
    """Close every connection of a client from :func:`connect` (it owns its pool); a
    :func:`shared` one is then made anew on next use (a closed cluster client is spent)."""
    for key in [k for k, v in _shared.items() if v is client]:
        del _shared[key]
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        pool.disconnect()
    for held in list(_held.get(client, ())):
        held.close()  # made by the pool, but not kept in it
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


def pipelined(client: Any, commands: list[tuple[Any, ...]],
              publish: tuple[str, str] | None = None, **options: Any) -> list[Any]:
    """Each command's reply (redis-py's parsed forms), in one pipeline of ``client``'s pool
    (a cluster's split by node), then ``PUBLISH`` ``publish`` (:func:`execute`, which takes
    ``options``)."""
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return execute(client, pipe, publish, **options)


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


class HeldConnection:
    """One connection of ``client``'s pool (a ``redis.Redis``), kept for the round trips of
    one greenlet at a time (the flusher, the fetcher, a
    :class:`~rill.hub.redis_batch.Batcher`'s sender): a pool's checkout polls the
    socket for stray data (``can_read``) every time, about half of a round trip's client
    CPU here (``bench/PROFILE.md``, "The flush"). :func:`disconnect` of ``client`` closes it
    (the pool made it, but does not keep it), and it is made again in a forked child."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._connection: Any = None
        self._pid = 0
        _held.setdefault(client, weakref.WeakSet()).add(self)

    def close(self) -> None:
        """Close the connection (the next round trip makes another)."""
        if self._connection is not None:
            self._connection.disconnect()
            self._connection = None

    def round_trip(self, commands: list[tuple[Any, ...]], again: bool = True) -> list[Any]:
        """Send ``commands`` packed in one write, then read each one's reply: the reply, or
        the ``redis.ResponseError`` Redis answered. A connection Redis closed meanwhile (a
        restart, its idle ``timeout``) is found by the round trip and made again once, as
        redis-py's own retry does, unless a reply was already read. Raises any other error
        (e.g. in :data:`ERRORS`), after disconnecting: no reply is left half read."""
        if self._connection is None or self._pid != os.getpid():
            self._connection = self.client.connection_pool.make_connection()
            self._pid = os.getpid()
        connection = self._connection
        replies: list[Any] = []
        try:
            connection.send_packed_command(connection.pack_commands(commands))
            for _ in commands:
                try:
                    replies.append(connection.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
        except redis.ConnectionError:
            connection.disconnect()
            if again and not replies:
                return self.round_trip(commands, again=False)
            raise
        except BaseException:
            connection.disconnect()
            raise
        return replies


# Each client's held connections, for disconnect(): weak both ways, so neither outlives its use.
_held: weakref.WeakKeyDictionary[Any, weakref.WeakSet[HeldConnection]] = (
    weakref.WeakKeyDictionary())


def round_trip(held: HeldConnection, commands: list[tuple[Any, ...]],
               publish: tuple[str, str] | None = None) -> list[Any]:
    """Each command's reply, or the error Redis answered, in one round trip, then ``PUBLISH``
    ``publish`` (channel, message): on one Redis node packed on ``held``; on a cluster
    (``held.client`` a ``redis.RedisCluster``) in a pipeline, which splits the commands by
    node and cannot carry a ``PUBLISH`` (:func:`execute`). Raises what they raise (e.g. in
    :data:`ERRORS`)."""
    client = held.client
    if isinstance(client, redis.RedisCluster):
        return pipelined(client, commands, publish, raise_on_error=False)
    return held.round_trip(with_publish(commands, publish))[:len(commands)]


def with_publish(commands: list[tuple[Any, ...]],
                 publish: tuple[str, str] | None) -> list[tuple[Any, ...]]:
    """``commands``, then ``PUBLISH`` ``publish`` (channel, message) if given."""
    return [*commands, ("PUBLISH", *publish)] if publish is not None else commands
