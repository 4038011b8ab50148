"""Producers: what drives a :class:`~rill.generation.Generation`, which decides everything.

Two drivers, one policy:

- :class:`EventedProducer` (gevent, and an upstream that reads without waiting): no greenlet
  of its own. A libev read watcher on the upstream socket reads what arrived in gevent's
  hub and hands it over; a libev timer, re-armed at the next deadline, and hub callbacks
  (signals, stops) ask the generation whether it must end.
- :class:`TaskProducer` (any other upstream, or a worker without gevent): a reader task
  (greenlet or thread, :mod:`rill.tasks`) reads the upstream a batch at a time and hands it
  over; a supervisor task waits for the next deadline or a wake-up and asks the same.

Stopping closes the upstream request at once, then writes the terminal event.

An answer of several model steps (server-side tools, :mod:`rill.steps`): when a step's
stream ends with the generation :attr:`~rill.generation.Generation.between_steps`, the
producer closes it and calls :meth:`~rill.generation.Generation.next_step` in a task (the
reader task; the evented producer spawns one), then reads the next step's stream as the
first. A stop during a tool step stops the step (its tools are cancelled) as it would close
a model step's upstream.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, cast

import gevent

from . import errors, tasks
from .generation import Ending, Generation
from .hub import TERMINAL
from .upstreams import DRAIN_SECONDS, NonBlockingStream, UpstreamStream, batches_of

log = logging.getLogger(__name__)

YIELD_EVERY = 64  # upstream events read before the reader lets other greenlets run (a
# read that finds data waiting does not switch, so a fast upstream would starve the rest)


class Producer:
    """Drives ``generation`` from ``upstream``. Register it, then :meth:`start` it."""

    def __init__(self, generation: Generation, upstream: UpstreamStream) -> None:
        self.generation, self.upstream = generation, upstream

    @property
    def finished(self) -> bool:
        return self.generation.finished

    def start(self) -> None:
        raise NotImplementedError

    def signal(self) -> None:
        """A cancel or a leave may concern this stream: check it now."""
        raise NotImplementedError

    def stop(self, error: errors.RillError | None = None) -> None:
        """End the generation now (from any greenlet): ``error``, or a cancel if None."""
        raise NotImplementedError


class TaskProducer(Producer):
    """A reader task and a supervisor task (greenlets, or threads without gevent)."""

    def start(self) -> None:
        self.wake = tasks.event()
        self._batches = iter(batches_of(self.upstream))  # one iterator: the drain goes on
        self.generation.open()
        self._reader = tasks.spawn(self._read)
        self._supervisor = tasks.spawn(self._supervise)

    def _read(self) -> None:
        generation = self.generation
        try:
            while self._read_step() and generation.between_steps:
                self.upstream.close()
                upstream = generation.next_step()  # blocks this task: tools, then the open
                if upstream is None:
                    break
                self.upstream, self._batches = upstream, iter(batches_of(upstream))
        except Exception as exc:
            generation.fail(exc)
        finally:
            self.upstream.close()
            self.wake.set()

    def _read_step(self) -> bool:
        """Read one model step's stream to its end; False if it broke off."""
        generation, read = self.generation, 0
        for batch in self._batches:
            generation.take(batch)
            if batch[-1][0] in TERMINAL:
                break
            read += len(batch)
            if read >= YIELD_EVERY:
                read = 0
                tasks.pause()
        else:
            generation.fail(errors.UpstreamCut())
            return False
        # After done: read the body to its end so the connection returns to the pool.
        with contextlib.suppress(Exception):
            for _ in self._batches:
                pass
        return True

    def _supervise(self) -> None:
        generation = self.generation
        try:
            while not generation.finished:
                self.wake.wait(generation.wait_for(time.monotonic()))
                self.wake.clear()
                ending = None if generation.finished else generation.due(time.monotonic())
                if ending is not None:
                    self._end(ending)
        except errors.HubUnavailable as exc:
            log.warning("stream %s: the hub lost it (%r); stopping its generation",
                        generation.stream_id[:6], exc.__cause__)
            self._end(Ending(exc))
        except Exception as exc:
            log.exception("stream %s: the supervisor failed", generation.stream_id[:6])
            self._end(Ending(exc if isinstance(exc, errors.RillError) else None))
        finally:
            generation.close()

    def _end(self, ending: Ending) -> None:
        # Killing the reader cannot interrupt an append: appends never switch greenlets. A
        # reader thread is stopped by closing its upstream (or stopping its tool step), and
        # its broken read is ignored.
        self.generation.halt()
        self._reader.stop(unblock=self.upstream.close)
        self.generation.end(ending)

    def signal(self) -> None:
        self.generation.signal()
        self.wake.set()

    def stop(self, error: errors.RillError | None = None) -> None:
        self.generation.request_stop(error)
        self.wake.set()


class EventedProducer(Producer):
    """The generation on libev watchers, with no greenlet of its own (gevent only).

    Nothing here may block, which holds because the generation's hub calls and closing the
    upstream never do. Per stream this saves the reader's and the supervisor's greenlets
    (their spawn, saved stacks, and a switch and an extra ``recv`` per upstream read). Needs
    an upstream stream with ``fileno()`` and ``read_nowait()``
    (:class:`~rill.upstreams.openai_compat.OpenAIStream` over Rill's transport).
    """

    def start(self) -> None:
        self._loop = gevent.get_hub().loop
        self._timer: Any = None
        self._io: Any = None
        self._step: tasks.Task | None = None  # the task running a tool step
        self.generation.open()
        self._attach(self.upstream)

    def _attach(self, upstream: UpstreamStream) -> None:
        """Read ``upstream`` (a model step's stream) on a read watcher."""
        self.upstream = upstream
        self._stream = cast(NonBlockingStream, upstream)
        fileno = getattr(upstream, "fileno", lambda: None)()
        if fileno is None:  # a later step's response that can only be iterated
            raise errors.UpstreamError("The model provider's answer to a tool step came "
                                       "in a form Rill cannot read here; the answer is "
                                       "incomplete.")
        self._io = self._loop.io(fileno, 1)  # 1: readable
        self._io.start(self._guard, self._on_readable)
        self._loop.run_callback(self._guard, self._on_readable)  # bytes read with the head
        self._arm(self.generation.wait_for(time.monotonic()))

    def _next_step(self) -> None:
        """In a task of its own: the tool step, then the next step's stream on a watcher."""
        generation = self.generation
        try:
            upstream = generation.next_step()
        except Exception as exc:
            upstream = None
            with contextlib.suppress(Exception):
                generation.fail(exc)
        if upstream is not None and not generation.finished:
            self._guard(lambda: self._attach(upstream))
        elif upstream is not None:
            upstream.close()
        if generation.finished:
            self._finish()

    def _guard(self, step: Callable[[], None]) -> None:
        """Run ``step`` in the hub: an exception ends the generation, never the hub."""
        try:
            step()
        except Exception as exc:
            self._close_upstream()
            with contextlib.suppress(Exception):
                self.generation.fail(exc)
            self._finish()

    def _arm(self, delay: float, step: Callable[[], None] | None = None) -> None:
        if self._timer is not None:
            self._timer.close()
        self._timer = self._loop.timer(delay)
        self._timer.start(self._guard, step or self._on_timer)

    def _on_readable(self) -> None:
        events = self._stream.read_nowait()
        if events is None:
            return
        generation = self.generation
        if generation.finished:  # reading past the end, for the connection's reuse
            if self._stream.body_ended:
                self._close_upstream()
            return
        if events:
            generation.take(events)
            if generation.between_steps:  # the timer keeps the deadlines: no drain
                self._close_upstream()
                self._step = tasks.spawn(self._next_step)
            elif generation.finished:
                if self._stream.body_ended:
                    self._close_upstream()
                else:  # the rest of the body (the chunked terminator) may take a moment
                    self._arm(DRAIN_SECONDS, self._close_upstream)
                self._finish()

    def _on_timer(self) -> None:
        generation = self.generation
        if generation.finished:
            return
        ending = generation.due(time.monotonic())
        if ending is not None:
            self._close_upstream()
            generation.end(ending)
            self._finish()
        else:
            self._arm(generation.wait_for(time.monotonic()))

    def signal(self) -> None:
        self.generation.signal()
        self._loop.run_callback(self._guard, self._on_timer)

    def stop(self, error: errors.RillError | None = None) -> None:
        self.generation.request_stop(error)
        self._loop.run_callback(self._guard, self._on_timer)

    def _close_upstream(self) -> None:
        io, self._io = self._io, None
        if io is not None:
            io.stop()
            io.close()
            self.upstream.close()
        step, self._step = self._step, None
        if step is not None and not step.dead and not step.running_here:
            step.kill()  # scheduled from the hub; its tools are cancelled as it unwinds

    def _finish(self) -> None:
        if self._io is None and self._timer is not None:
            self._timer.close()
        self.generation.close()


def create(generation: Generation, upstream: UpstreamStream) -> Producer:
    """The producer for ``upstream``: evented when gevent runs and the upstream can be read
    without waiting, else tasks (greenlets, or threads in a worker without gevent).
    Register it where signals find it, then call :meth:`Producer.start`."""
    fileno = getattr(upstream, "fileno", None)
    evented = tasks.cooperative() and fileno is not None and fileno() is not None
    return (EventedProducer if evented else TaskProducer)(generation, upstream)
