"""Background work that fits the worker it runs in: greenlets under gevent, threads otherwise.

Under gunicorn's gevent worker (sockets monkey-patched) a producer's reader and supervisor
are greenlets, and a stuck reader is killed at its blocking read. In a sync or gthread worker
(a legacy host that cannot switch), they are daemon threads; a thread cannot be killed, so
it is stopped by closing what it reads from (see :meth:`Task.stop`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
from gevent import monkey


def cooperative() -> bool:
    """True when sockets are gevent's: greenlets may block on I/O without blocking others."""
    return bool(monkey.is_module_patched("socket"))


def event() -> Any:
    """An event (``set``, ``clear``, ``wait(timeout)``) of the right kind for this process."""
    return gevent.event.Event() if cooperative() else threading.Event()


class Task:
    """One piece of background work: a greenlet or a daemon thread."""

    def __init__(self, target: Callable[[], None]) -> None:
        if cooperative():
            self._greenlet: gevent.Greenlet | None = gevent.spawn(target)
            self._thread: threading.Thread | None = None
        else:
            self._greenlet = None
            self._thread = threading.Thread(target=target, daemon=True)
            self._thread.start()

    @property
    def dead(self) -> bool:
        if self._greenlet is not None:
            return bool(self._greenlet.dead)
        assert self._thread is not None
        return not self._thread.is_alive()

    @property
    def running_here(self) -> bool:
        """True when called from this task itself."""
        if self._greenlet is not None:
            return gevent.getcurrent() is self._greenlet
        return self._thread is threading.current_thread()

    def stop(self, unblock: Callable[[], None] = lambda: None, timeout: float = 5.0) -> None:
        """End the task: kill the greenlet, or call ``unblock`` and wait for the thread."""
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=timeout)
            return
        assert self._thread is not None
        if self._thread is threading.current_thread():
            return
        unblock()
        self._thread.join(timeout)

    def kill(self, timeout: float = 1.0) -> bool:
        """Kill the greenlet, waiting up to ``timeout`` s for it to end: True if it has, or
        if the kill is only scheduled because this runs in gevent's hub (a libev callback),
        where nothing may wait. A thread cannot be killed: False, and it runs on (its
        caller drops its work)."""
        if self._greenlet is None:
            return False
        in_hub = gevent.getcurrent() is gevent.get_hub()
        self._greenlet.kill(block=not in_hub, timeout=timeout)
        return in_hub or bool(self._greenlet.dead)

    def join(self, timeout: float | None = None) -> None:
        if self._greenlet is not None:
            self._greenlet.join(timeout)
        elif self._thread is not None:
            self._thread.join(timeout)


def spawn(target: Callable[[], None]) -> Task:
    return Task(target)


def pause() -> None:
    """Let other greenlets run (a no-op for threads, which the OS interleaves)."""
    if cooperative():
        gevent.sleep(0)


def sleep(seconds: float) -> None:
    """Sleep without blocking other greenlets (a plain sleep in a thread)."""
    if cooperative():
        gevent.sleep(seconds)
    else:
        time.sleep(seconds)
