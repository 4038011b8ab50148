"""The relay: one upstream stream, read in its own greenlet, written out as SSE.

A :class:`Generation` reads the upstream and appends Rill events to a list; the response
generator (:func:`stream`) waits on it, writes what is new as SSE, and in the silences sends
heartbeats and enforces the stall and length limits. Decoupling the two is what lets a
heartbeat flow while a model thinks, a stall be noticed while the upstream socket is
silent, and a client disconnect close the upstream at once (:func:`watch_disconnect`).

Event contract (ids count from 0): ``start`` ``{"stream_id", "model"}``; ``delta`` and
``reasoning`` ``{"content"}``; then ``done`` ``{"finish_reason", "usage"}`` or ``error``
``{"code", "message"}``, and the stream ends.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.event
from gevent.greenlet import Greenlet

from . import errors
from .sse import HEARTBEAT, encode_json_event
from .upstreams import Event, UpstreamStream

log = logging.getLogger(__name__)

TERMINAL = frozenset({"done", "error"})
YIELD_EVERY = 64  # events a producer appends before it lets other greenlets run


class Generation:
    """Reads ``upstream`` in a greenlet into :attr:`events`, in order, ending in a terminal."""

    def __init__(self, upstream: UpstreamStream) -> None:
        self.events: list[Event] = []
        self.finished = False
        self.last_chunk_at = time.monotonic()
        self._upstream = upstream
        self._wake = gevent.event.Event()
        self._greenlet: Greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        try:
            for count, event in enumerate(self._upstream, 1):
                if not self.finished:
                    self._append(event)
                if count % YIELD_EVERY == 0:
                    gevent.sleep(0)  # relaying buffered data never blocks: yield on purpose
        except errors.RillError as exc:
            self._append(("error", exc.to_dict()))
        except Exception:
            log.exception("the upstream reader failed")
            self._append(("error", errors.RillError().to_dict()))
        finally:
            self._upstream.close()
        if not self.finished:
            self._append(("error", errors.UpstreamCut().to_dict()))

    def _append(self, event: Event) -> None:
        if self.finished:
            return
        self.events.append(event)
        self.last_chunk_at = time.monotonic()
        self.finished = event[0] in TERMINAL
        self._wake.set()

    def wait(self, since: int, timeout: float) -> list[Event]:
        """Return the events after the first ``since``, waiting up to ``timeout`` s for one."""
        if len(self.events) <= since:
            self._wake.clear()
            if len(self.events) <= since and not self.finished:
                self._wake.wait(timeout)
        return self.events[since:]

    def stop(self, error: errors.RillError | None = None) -> None:
        """End the generation now and close the upstream request, if it is still running.

        Appends ``error`` (or ``done`` with ``finish_reason: "cancelled"``) as the terminal
        event. The upstream's socket is closed before this returns.
        """
        if self.finished:
            return
        self._greenlet.kill(block=True, timeout=5)
        if error is None:
            self._append(("done", {"finish_reason": "cancelled", "usage": None}))
        else:
            self._append(("error", error.to_dict()))


def stream(
    generation: Generation,
    *,
    start: dict[str, Any],
    heartbeat: float,
    stall_timeout: float,
    max_seconds: float,
    client_gone: Callable[[], bool] = lambda: False,
) -> Iterator[bytes]:
    """Yield the SSE bytes of one stream: ``start``, the generation's events, heartbeats.

    Consecutive ``delta`` (or ``reasoning``) events waiting together go out as one, so a
    busy worker writes fewer, larger frames. Ends after the terminal event, or silently
    when ``client_gone()`` turns true. Times in seconds.
    """
    yield encode_json_event("start", start, 0)
    ids = iter(range(1, 1 << 62))
    try:
        yield from _relay(generation, ids, heartbeat, stall_timeout, max_seconds, client_gone)
    except Exception:
        log.exception("the relay failed mid-stream")
        generation.stop()
        yield encode_json_event("error", errors.RillError().to_dict(), next(ids))


def _relay(
    generation: Generation,
    ids: Iterator[int],
    heartbeat: float,
    stall_timeout: float,
    max_seconds: float,
    client_gone: Callable[[], bool],
) -> Iterator[bytes]:
    seen = 0
    deadline = time.monotonic() + max_seconds
    while True:
        now = time.monotonic()
        timeout = min(heartbeat, deadline - now, generation.last_chunk_at + stall_timeout - now)
        batch = generation.wait(seen, max(timeout, 0.0))
        if client_gone():
            return
        if batch:
            seen += len(batch)
            yield _encode(batch, ids)
            if generation.finished and seen == len(generation.events):
                return
            continue
        now = time.monotonic()
        if now >= deadline:
            generation.stop(errors.StreamTimeout())
        elif now - generation.last_chunk_at >= stall_timeout:
            generation.stop(errors.UpstreamStalled())
        else:
            yield HEARTBEAT


def _encode(batch: list[Event], ids: Iterator[int]) -> bytes:
    """Frame ``batch``, merging runs of same-kind text events, numbering them from ``ids``."""
    frames = []
    i = 0
    while i < len(batch):
        kind, payload = batch[i]
        i += 1
        if kind in ("delta", "reasoning") and i < len(batch) and batch[i][0] == kind:
            parts = [payload["content"]]
            while i < len(batch) and batch[i][0] == kind:
                parts.append(batch[i][1]["content"])
                i += 1
            payload = {"content": "".join(parts)}
        frames.append(encode_json_event(kind, payload, next(ids)))
    return b"".join(frames)


def watch_disconnect(sock: socket.socket, on_disconnect: Callable[[], None]) -> Greenlet:
    """Call ``on_disconnect`` as soon as the client closes ``sock`` (gevent sockets only).

    A WSGI app otherwise learns of a disconnect only when a write fails, which for a
    silent upstream may be minutes later. Peeks, so it consumes nothing; data arriving
    (a pipelined request) is not a disconnect, and ends the watch.
    """

    def run() -> None:
        while True:
            try:
                data = sock.recv(1, socket.MSG_PEEK)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                on_disconnect()
            return

    return gevent.spawn(run)
