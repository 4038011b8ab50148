"""The relay's subscriber side: one HTTP connection reading a stream from the hub as SSE.

:func:`subscribe` yields a stream's records from an id on (a replay, in bounded batches),
then follows it live until ``done`` or ``error``. It renews its presence (so the producer knows
someone is listening) at least every lease; in silences it sends heartbeats and checks the
producer's lease, and if that ran out it writes ``error`` ``producer_lost`` into the stream
for every subscriber.
:func:`watch_disconnect` notices a client leaving while nothing is written;
:func:`send_deadline` disconnects a client that takes nothing while something is;
:class:`Errand` gives up work done for a client (opening the upstream) when it leaves.

Event contract (ids count from 0): ``start`` ``{"stream_id", "model"}``; ``delta`` and
``reasoning`` ``{"content"}``, ``tool_call`` and ``tool_result`` (see
:mod:`rill.generation`); then ``done`` ``{"finish_reason", "usage"}`` or ``error``
``{"code", "message"}``, and the stream ends.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import gevent
import orjson
from gevent.greenlet import Greenlet

from . import errors, tasks
from .generation import encode_records
from .hub import TERMINAL, Hub
from .sse import HEARTBEAT, encode_event

log = logging.getLogger(__name__)
T = TypeVar("T")


def subscribe(
    hub: Hub,
    stream_id: str,
    after: int,
    subscriber: str,
    *,
    heartbeat: float,
    lease: float,
    batch: int,
    client_gone: Callable[[], bool] = lambda: False,
) -> Iterator[bytes]:
    """Yield the SSE bytes of stream ``stream_id`` after event id ``after`` (-1: all).

    Times in seconds; ``batch`` caps the events in one write. A failure of the hub ends the
    stream with an ``error`` event that has no id, so ``Last-Event-ID`` still points at the
    last real event and a later resume loses nothing.
    """
    last, wrote_at = after, time.monotonic()
    try:
        hub.join(stream_id, subscriber)
        joined_at = wrote_at
        while not client_gone():
            # Each read period (a quarter lease) an idle subscriber looks at the producer's
            # lease: a killed producer is reported within the lease.
            records = hub.read(stream_id, last, min(heartbeat, lease / 4), batch)
            if client_gone():
                return
            if not records:
                state = hub.state(stream_id)
                if state == "lost":
                    log.warning("stream %s: the producer's lease ran out", stream_id[:6])
                    hub.append_if_next(stream_id, (last + 1, "error",
                                                   errors.ProducerLost().to_dict()))
                    continue
                if state == "live":
                    hub.join(stream_id, subscriber)
                    joined_at = time.monotonic()
                    if time.monotonic() - wrote_at >= heartbeat:
                        yield HEARTBEAT
                        wrote_at = time.monotonic()
                    continue
                # Finished: perhaps since the read, so send what came; else this subscriber
                # is at or past the terminal event.
                records = hub.read(stream_id, last, 0, batch)
                if not records:
                    return
            last = records[-1][0]
            yield encode_records(records)
            wrote_at = time.monotonic()
            if records[-1][1] in TERMINAL:
                return
            if wrote_at - joined_at >= lease:  # events flow: still renew the presence
                hub.join(stream_id, subscriber)
                joined_at = wrote_at
            if len(records) >= batch:
                # More is waiting (a replay): the hub's read will not block, nor will a
                # write the socket buffer takes, so let the others run (heartbeats,
                # gunicorn's worker heartbeat) between batches.
                tasks.pause()
    except errors.RillError as exc:
        yield _error_without_id(exc)
    except Exception:
        log.exception("stream %s: the relay failed", stream_id[:6])
        yield _error_without_id(errors.RillError())
    finally:
        with contextlib.suppress(errors.RillError):
            hub.leave(stream_id, subscriber)


def nothing_follows(hub: Hub, stream_id: str, after: int) -> bool:
    """True when no event can follow id ``after``: the stream is finished and ``after`` is at
    or past its terminal event. Such a resume is answered 204, which stops an
    ``EventSource`` from reconnecting (WHATWG HTML, "Server-sent events": a 204 fails the
    connection for good). Raises the hub's errors (``StreamNotFound``, ``HubUnavailable``)."""
    return hub.state(stream_id) == "finished" and not hub.read(stream_id, after, 0, 1)


def _error_without_id(error: errors.RillError) -> bytes:
    return encode_event(orjson.dumps(error.to_dict()).decode(), event="error")


def watch_disconnect(sock: socket.socket, on_disconnect: Callable[[], None]) -> Watch:
    """Call ``on_disconnect`` as soon as the client closes ``sock`` (gevent sockets only).

    A WSGI app otherwise learns of a disconnect only when a write fails, which for a
    silent upstream may be minutes later. Peeks, so it consumes nothing; data arriving
    (a pipelined request) is not a disconnect, and ends the watch.
    """
    return Watch(sock, on_disconnect)


def send_deadline(chunks: Iterator[bytes], sock: socket.socket, seconds: float,
                  on_timeout: Callable[[], None]) -> Iterator[bytes]:
    """Yield ``chunks``; if writing one to ``sock`` takes longer than ``seconds``, reset the
    connection and call ``on_timeout`` (gevent sockets only).

    gunicorn writes each chunk a response yields with ``sendall``, which waits as long as the
    client keeps its receive window shut: a client that never reads held a greenlet and
    megabytes of socket buffer for good. A libev timer is armed as a chunk is handed over and
    stopped when gunicorn asks for the next one. If it fires, the socket gets ``SO_LINGER``
    0 and is shut down: the blocked ``sendall`` fails at once (EPIPE, which gunicorn logs at
    debug level), the response is closed as after any leave, and gunicorn's close resets
    the connection and drops the unsent bytes.
    """
    timer: Any = gevent.get_hub().loop.timer(seconds)

    def expired() -> None:  # in the event loop: nothing here may block
        # Through a duplicate: gevent's own shutdown() would fail the waiting sendall with
        # EBADF ("closed in another greenlet"), which gunicorn logs as an error.
        with contextlib.suppress(OSError), socket.fromfd(sock.fileno(), sock.family,
                                                         sock.type) as dup:
            dup.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            dup.shutdown(socket.SHUT_RDWR)
        on_timeout()

    try:
        for chunk in chunks:
            timer.start(expired)
            try:
                yield chunk
            finally:
                timer.stop()
    finally:
        timer.close()
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


class ClientLeft(Exception):
    """The client closed its connection while Rill worked on its behalf."""


class _Stop(BaseException):
    """Raised in an errand's greenlet to stop it with ``error``: a BaseException, so no
    ``except Exception`` on the way (an SDK's retry loop) takes it for a network error."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error


class Errand(Generic[T]):
    """``work`` run for a client in the caller's greenlet, given up when the client leaves.

    While :meth:`result` runs the work, a read watcher on ``sock`` notices the client closing
    (:func:`watch_disconnect`), and :class:`ClientLeft` is raised into the work, as is any
    error :meth:`stop` is given: a wait on the network (the upstream's status line, a retry's
    sleep) ends at once, and what the work held is released as the exception unwinds it. The
    error is thrown from the event loop, as ``gevent.Greenlet.kill`` throws, but only while
    the work still runs: never into the caller after :meth:`result` returned. Without gevent,
    or without a socket, ``work`` runs and cannot be stopped.

    The work runs in the caller, not a greenlet of its own: a spawn, a context copy and two
    switches per stream start were 3 % of a loaded worker (``bench/PROFILE.md``).
    """

    def __init__(self, work: Callable[[], T], sock: socket.socket | None) -> None:
        self._work, self._sock = work, sock
        self._runner: Any = None  # the greenlet running the work, while it runs
        self._stopped = False  # a flag, not the error: no cycle through its traceback

    def result(self) -> T:
        """Run the work; return its result or raise its exception (or the stop's)."""
        if self._sock is None or not tasks.cooperative():
            return self._work()
        self._runner = gevent.getcurrent()
        watch = Watch(self._sock, lambda: self.stop(ClientLeft()))
        try:
            return self._work()
        except _Stop as stop:
            raise stop.error from None
        finally:
            self._runner = None
            watch.kill()

    def stop(self, error: BaseException) -> None:
        """Raise ``error`` in the work, unless it is done; safe to call again. Called from
        another greenlet (a client's watch, the worker's drain), never from the work."""
        if self._runner is not None and not self._stopped:
            self._stopped = True
            gevent.get_hub().loop.run_callback(self._throw, error)

    def _throw(self, error: BaseException) -> None:  # in the event loop
        runner = self._runner
        if runner is not None and runner is not gevent.getcurrent():
            runner.throw(_Stop(error))


class Watch:
    """A read watcher on the client socket, and a greenlet only once it is readable.

    A greenlet parked in ``recv`` for the whole stream would cost about 8 KiB of saved
    stack per stream; the watcher costs a few hundred bytes.
    """

    def __init__(self, sock: socket.socket, on_disconnect: Callable[[], None]) -> None:
        self._sock, self._on_disconnect = sock, on_disconnect
        self._check: Greenlet | None = None
        self._io: Any = gevent.get_hub().loop.io(sock.fileno(), 1)  # 1: readable
        self._io.start(self._readable)

    def _readable(self) -> None:
        # Called in the hub, which may not block: the peek runs in a greenlet.
        self._stop_io()
        self._check = gevent.spawn(self._peek)

    def _peek(self) -> None:
        try:
            data = self._sock.recv(1, socket.MSG_PEEK)
        except OSError:
            data = b""
        if not data:
            self._on_disconnect()

    def _stop_io(self) -> None:
        io, self._io = self._io, None
        if io is not None:
            io.stop()
            io.close()

    def kill(self, block: bool = True, timeout: float | None = None) -> None:
        """Stop watching, before anything else reads the socket; safe to call again."""
        self._stop_io()
        if self._check is not None:
            self._check.kill(block=block, timeout=timeout)
