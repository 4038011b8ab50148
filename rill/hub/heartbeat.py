"""A worker's lease in Redis, renewed from a native thread (the Redis hub)."""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from collections.abc import Callable

import gevent
import redis.utils
from gevent import monkey

from .. import tasks
from .redis_io import ERRORS, connect, disconnect, worker_key

log = logging.getLogger(__name__)


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
        if tasks.cooperative():
            # What the thread's first connect imports, imported here first: a hub's settings
            # (pprint), the resolver's and the thread pool's modules, and what redis-py's
            # CLIENT SETINFO reads its version with (importlib.metadata). A native thread
            # importing them took the import lock with a gevent lock: making the process's
            # first hub so recursed until it failed, and this thread, importing the same
            # module at once, waited on a lock its own loop could not release (LoopExit).
            hub = gevent.get_hub()
            hub.resolver_class, hub.threadpool_class  # noqa: B018 (imported when first read)
            redis.utils.get_lib_version()
            start = monkey.get_original("_thread", "start_new_thread")
        else:
            start = _start_daemon
        start(self._run, ())

    def _run(self) -> None:
        client, failing = None, False
        try:
            while not self.stopped:
                started = time.monotonic()
                try:
                    if client is None:  # a cluster's client connects when it is made
                        client = connect(self.url, max(self.every, 0.5), pool_size=2)
                    client.set(self.key, 1, px=self.ttl_ms)
                    self.beats += 1
                    failing = False
                except ERRORS:
                    pass  # Redis is away or refuses writes: the lease lapses, as it should
                except Exception:  # Redis's other refusals (MISCONF): logged once a spell
                    if not failing:
                        log.exception("the worker's heartbeat failed")
                    failing = True
                self._wake.acquire(timeout=max(self.every - (time.monotonic() - started),
                                               0.01))
            if client is not None:
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
