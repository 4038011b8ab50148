"""One behaviour table, run against every producer and both hubs.

A generation's policy (:class:`rill.generation.Generation`) is one object; the producers
only drive it. Each row here runs through each driver (``evented``: libev watchers;
``greenlets``: reader and supervisor tasks; ``threads``: the task producer stopped as its
threads are) into each hub (memory; Redis, a real redis-server), over real sockets: a
scripted OpenAI-compatible server on 127.0.0.1, Rill's transport and upstream. Every row
checks the terminal event, the text kept, that the upstream request was closed when the
generation stopped early, and that the finish callback ran exactly once.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gevent
import gevent.event
import pytest

from rill import errors, tasks
from rill.config import DEFAULTS
from rill.generation import Limits
from rill.hub import Hub, create
from rill.producers import EventedProducer, Producer, TaskProducer
from tests.conftest import RedisServer
from tests.sse_client import Event, events_only, parse, text_of
from tests.test_evented import CHUNKED, END, TERMINATOR, Run, Server, sse, token
from tests.test_hub import flushed

FAST = 0.3  # seconds: the short limit a row sets
SLOW = Limits(stall_timeout=60, max_seconds=60, orphan_grace=60)


@dataclass(frozen=True)
class Row:
    """``script`` plays the upstream; ``act`` (run, env) does what a client or worker
    would; ``ending`` is the terminal event's (event, finish_reason or code)."""

    script: str
    ending: tuple[str, str]
    text: str
    limits: Limits = SLOW
    act: Callable[[Run, Env], None] = lambda run, env: None
    closes_early: bool = True  # the upstream request is closed before its natural end


class Env:
    """What a row may touch besides the run: its hub's Redis, if any."""

    def __init__(self, redis: RedisServer | None) -> None:
        self.redis = redis


def _leave(run: Run, env: Env) -> None:
    run.hub.join(run.stream_id, "client")
    gevent.sleep(0.05)
    run.hub.leave(run.stream_id, "client")  # and does not come back
    gevent.sleep(2 * FAST)  # before the row's reader joins


def _lose_hub(run: Run, env: Env) -> None:
    gevent.sleep(0.1)
    if env.redis is not None:
        env.redis.stop()  # the next flush fails
    else:  # what the Redis hub's flusher does when Redis refuses a stream
        stream = run.hub.get(run.stream_id)  # type: ignore[attr-defined]
        run.hub.fail(stream)  # type: ignore[attr-defined]
        run.hub.signal(run.stream_id)  # type: ignore[attr-defined]


ROWS = {
    "done": Row("complete", ("done", "stop"), "ab", closes_early=False),
    "cancel": Row("endless", ("done", "cancelled"), "ab",
                  act=lambda run, env: gevent.spawn_later(
                      0.1, run.hub.request_cancel, run.stream_id)),
    "orphan": Row("endless", ("done", "cancelled"), "ab",
                  Limits(stall_timeout=60, max_seconds=60, orphan_grace=FAST),
                  act=_leave),
    "stall": Row("silent", ("error", "upstream_stalled"), "ab",
                 Limits(stall_timeout=FAST, max_seconds=60, orphan_grace=60)),
    "timeout": Row("endless", ("error", "timeout"), "ab",
                   Limits(stall_timeout=60, max_seconds=FAST, orphan_grace=60)),
    "cut": Row("cut", ("error", "upstream_cut"), "ab", closes_early=False),
    "no done": Row("no done", ("error", "upstream_cut"), "ab", closes_early=False),
    "shutdown": Row("endless", ("error", "shutdown"), "ab",
                    act=lambda run, env: gevent.spawn_later(
                        0.1, run.producer.stop, errors.Shutdown(retry_after=1))),
    "error": Row("error event", ("error", "upstream_error"), "ab", closes_early=False),
    "hub loss": Row("endless", ("error", "hub_unavailable"), "ab", act=_lose_hub),
}


def _script(kind: str, closed: gevent.event.Event) -> Callable[[socket.socket, int], None]:
    def play(sock: socket.socket, index: int) -> None:
        sock.sendall(CHUNKED + token("a"))
        gevent.sleep(0.02)
        sock.sendall(token("b"))
        if kind == "complete":
            sock.sendall(END + TERMINATOR)
        elif kind == "error event":
            sock.sendall(sse({"error": {"message": "overloaded"}}))
            gevent.sleep(0.05)
            sock.close()
        elif kind == "cut":
            gevent.sleep(0.05)
            sock.close()
        elif kind == "no done":
            sock.sendall(TERMINATOR)
            gevent.sleep(0.05)
            sock.close()
        elif kind == "silent":
            _wait_closed(sock, closed, send=b"")
        elif kind == "endless":
            _wait_closed(sock, closed, send=token(""))

    return play


def _wait_closed(sock: socket.socket, closed: gevent.event.Event, send: bytes) -> None:
    """Send ``send`` (or nothing) every 20 ms until the client closes, for up to 5 s."""
    sock.settimeout(0.02)
    for _ in range(250):
        try:
            if send:
                sock.sendall(send)
            if sock.recv(1) == b"":
                break
        except TimeoutError:
            continue
        except OSError:
            break
    closed.set()


@pytest.fixture(params=["memory", "redis"])
def hub_kind(request) -> str:
    return str(request.param)


@pytest.fixture
def env(hub_kind: str) -> Iterator[Env]:
    redis = RedisServer() if hub_kind == "redis" else None  # its own: a row may stop it
    yield Env(redis)
    if redis is not None and redis.process.poll() is None:
        redis.stop()


def driven(driver: str, env: Env, monkeypatch) -> tuple[type[Producer], Hub]:
    """The producer class for ``driver`` (``evented``, ``greenlets``, ``threads``: stopped
    as a thread is) and a hub on ``env`` (memory, or its Redis)."""
    if driver == "threads":
        monkeypatch.setattr(tasks.Task, "stop", _stop_like_a_thread)
    config = {**DEFAULTS, "RILL_HEARTBEAT_SECONDS": 0.3, "RILL_PRODUCER_LEASE_SECONDS": 1.0}
    if env.redis is not None:
        config["RILL_REDIS_URL"] = env.redis.url
    return (EventedProducer if driver == "evented" else TaskProducer), create(config)


@pytest.mark.parametrize("driver", ["evented", "greenlets", "threads"])
@pytest.mark.parametrize("name", list(ROWS))
def test_every_producer_behaves_the_same(name: str, driver: str, env: Env,
                                         monkeypatch) -> None:
    """``threads`` is the task producer as a worker without gevent runs it: a thread cannot
    be killed, so its reader is stopped by closing the upstream it reads, and its broken
    read must not become the answer. (The tasks stay greenlets here: this process's
    sockets are gevent's, which threads may not share; only the stopping is the thread's.)"""
    row = ROWS[name]
    kind, hub = driven(driver, env, monkeypatch)
    closed = gevent.event.Event()
    server = Server(_handler(_script(row.script, closed)))
    try:
        run = Run(server, row.limits, hub=hub, driver=kind)
        row.act(run, env)
        items = list(parse(_subscribe(run)))
        gevent.sleep(0.1)
    finally:
        server.close()
        getattr(hub, "close", lambda: None)()
    events = [i for i in items if isinstance(i, Event)]
    last = events[-1]
    assert (last.event, last.json.get("finish_reason") or last.json.get("code")) == row.ending
    assert text_of(events_only(events)) == row.text
    assert (last.id is None) == (name == "hub loss")  # a lost hub's error has no id
    assert run.producer.finished and run.finished == 1
    if row.closes_early:
        assert closed.wait(2), "the upstream request was not closed"
    if env.redis is not None and name != "hub loss":
        flushed(hub)


def _stop_like_a_thread(task: tasks.Task, unblock: Callable[[], None] = lambda: None,
                        timeout: float = 5.0) -> None:
    unblock()
    task.join(timeout)


def _handler(script: Callable[[socket.socket, int], None]) -> Callable[..., None]:
    def handle(server: Server, sock: socket.socket, index: int) -> None:
        with sock:
            while server.read_request(sock):
                script(sock, index)

    return handle


def _subscribe(run: Run) -> Iterator[bytes]:
    from rill.relay import subscribe

    return subscribe(run.hub, run.stream_id, -1, "reader", heartbeat=0.3, lease=1.0,
                     batch=1000)
