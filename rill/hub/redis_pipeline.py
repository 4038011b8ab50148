"""Batches of Redis commands sent the moment they are ready, their replies read in order.

A round trip that waits for its replies before the next batch goes out costs a busy worker
an event-loop iteration per batch: the reply is read in the iteration after the send, and
whatever was appended meanwhile waits for it, then for its own round trip. Redis answers
the commands of one connection in the order it got them, so :class:`Pipeline` sends each
batch at once on one held connection and a reader greenlet reads the replies behind them,
handing each batch its own (``bench/PROFILE.md``, "Flushes in flight"). Under gevent, on one
Redis node; the flusher uses it there and a plain round trip elsewhere.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.lock
import redis

from .redis_io import HeldConnection

log = logging.getLogger(__name__)
Done = Callable[[list[Any] | BaseException], None]
DEPTH = 8  # batches out at once; a send past it waits for the oldest's replies


class Pipeline:
    """Sends batches on ``held``'s connection without waiting for earlier replies (the
    module's docstring). Each batch's ``done`` gets its replies (each the reply or the
    ``redis.ResponseError`` Redis answered) or, when the connection failed, the error
    (every batch out gets it). A connection Redis closed before the oldest batch's first
    reply (a restart, its idle ``timeout``), found by a send or a read, is made again once
    and the batches out sent again in order, as :meth:`HeldConnection.round_trip` does."""

    def __init__(self, held: HeldConnection, depth: int = DEPTH) -> None:
        self.held, self.depth = held, depth
        self._out: collections.deque[tuple[list[tuple[Any, ...]], Done]] = collections.deque()
        self._sending = gevent.lock.RLock()  # a batch is written whole, in order
        self._more, self._room = gevent.event.Event(), gevent.event.Event()
        self._reader: gevent.Greenlet | None = None
        self._retried = False  # the batches out were sent again since the last reply

    @property
    def pending(self) -> bool:
        """Batches are out, their replies not all read."""
        return bool(self._out)

    def send(self, commands: list[tuple[Any, ...]], done: Done) -> None:
        """Send ``commands`` now; ``done`` is called from the reader with the outcome.
        A closed connection is the reader's to handle (the class's docstring); any other
        error of the send is raised, ``done`` then never called."""
        while len(self._out) >= self.depth:
            self._room.clear()
            self._room.wait()
        with self._sending:
            connection = self.held.connection()
            try:
                connection.send_packed_command(connection.pack_commands(commands))
            except redis.ConnectionError:
                # Queued all the same: the reader finds the connection closed, and sends
                # every batch out again in order on a new one, or fails them all.
                self._drop(connection)
            except BaseException:
                self._drop(connection)
                raise
            self._out.append((commands, done))
        self._more.set()
        if self._reader is None or self._reader.dead:
            self._reader = gevent.spawn(self._read)

    def _read(self) -> None:
        while True:
            while not self._out:
                self._more.clear()
                self._more.wait()
            commands, done = self._out[0]
            connection = self.held.connection()
            replies: list[Any] = []
            try:
                for _ in commands:
                    try:
                        replies.append(connection.read_response())
                    except redis.ResponseError as exc:
                        replies.append(exc)
            except BaseException as exc:
                self._drop(connection)
                if isinstance(exc, redis.ConnectionError) and not replies and not self._retried:
                    self._retried = True  # once: a second failure fails the batches
                    if self._resend():
                        continue
                self._fail_all(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            self._retried = False
            self._out.popleft()
            self._room.set()
            self._hand(done, replies)

    def _resend(self) -> bool:
        """Send every batch out again on a new connection; False if that fails too."""
        with self._sending:
            connection = self.held.connection()
            try:
                for commands, _ in self._out:
                    connection.send_packed_command(connection.pack_commands(commands))
            except redis.ConnectionError:
                self._drop(connection)
                return False
        return True

    def _drop(self, connection: Any) -> None:
        connection.disconnect()  # no reply left half read; the next send connects again

    def _fail_all(self, exc: BaseException) -> None:
        failed = list(self._out)
        self._out.clear()
        self._room.set()
        for _, done in failed:
            self._hand(done, exc)

    @staticmethod
    def _hand(done: Done, outcome: list[Any] | BaseException) -> None:
        try:
            done(outcome)
        except Exception:  # the reader goes on: the batches behind have owners too
            log.exception("a Redis pipeline's batch failed in its handler")
