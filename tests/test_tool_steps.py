"""Server-side tool steps under every producer, into both hubs (issue 17, item 2).

The step loop is the generation's policy (:mod:`rill.steps`); each row runs through each
driver (``evented``, ``greenlets``, ``threads``) into each hub over real sockets, as
tests/test_producers.py does: a scripted server answers the first request with a tool call
and any later one with text ("ab"). Each row checks the terminal event, the text, the tool
results, that a stopped tool step's tool was stopped, and that the finish callback ran once.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gevent
import orjson
import pytest
from flask import Flask

from rill import errors, tasks
from rill.config import DEFAULTS
from rill.generation import Limits
from rill.hub import create
from rill.producers import EventedProducer, Producer, TaskProducer
from rill.tools import ToolRegistry
from tests.conftest import RedisServer
from tests.sse_client import events_only, parse, text_of
from tests.test_evented import CHUNKED, END, TERMINATOR, Run, Server, sse, token
from tests.test_producers import FAST, SLOW, Env, _leave, _stop_like_a_thread, _subscribe

TOOLS = ToolRegistry()
STOPPED: list[str] = []  # the tool calls killed mid-way


@TOOLS.tool
def lookup(q: str) -> str:
    """Finds ``q``."""
    return f"found {q}"


@TOOLS.tool
def wait(seconds: float, mark: str) -> str:
    """Waits."""
    try:
        gevent.sleep(seconds)
    except gevent.GreenletExit:
        STOPPED.append(mark)
        raise
    return "waited"


def _call(name: str, arguments: dict) -> bytes:
    head = {"index": 0, "id": "call_s1", "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(arguments).decode()}}
    return (sse({"choices": [{"index": 0, "delta": {"tool_calls": [head]}}]})
            + sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
            + sse("[DONE]"))


@dataclass(frozen=True)
class Row:
    call: tuple[str, dict]
    ending: tuple[str, str]
    text: str
    results: list[str]
    limits: Limits = SLOW
    act: Callable[[Run, Env], None] = lambda run, env: None
    stops_tool: bool = False


def _later(seconds: float, do: Callable[[Run], object]) -> Callable[[Run, Env], None]:
    return lambda run, env: gevent.spawn_later(seconds, do, run) and None


ROWS = {
    "steps": Row(("lookup", {"q": "x"}), ("done", "stop"), "ab", ["found x"]),
    "no stall": Row(("wait", {"seconds": 3 * FAST, "mark": "slow"}), ("done", "stop"), "ab",
                    ["waited"], Limits(stall_timeout=FAST, max_seconds=60, orphan_grace=60)),
    "cancel": Row(("wait", {"seconds": 5, "mark": "cancel"}), ("done", "cancelled"), "", [],
                  act=_later(0.3, lambda run: run.hub.request_cancel(run.stream_id)),
                  stops_tool=True),
    "shutdown": Row(("wait", {"seconds": 5, "mark": "shutdown"}), ("error", "shutdown"), "",
                    [], act=_later(0.3, lambda run: run.producer.stop(
                        errors.Shutdown(retry_after=1))), stops_tool=True),
    "timeout": Row(("wait", {"seconds": 5, "mark": "timeout"}), ("error", "timeout"), "", [],
                   Limits(stall_timeout=60, max_seconds=2 * FAST, orphan_grace=60),
                   stops_tool=True),
    "orphan": Row(("wait", {"seconds": 5, "mark": "orphan"}), ("done", "cancelled"), "", [],
                  Limits(stall_timeout=60, max_seconds=60, orphan_grace=FAST), act=_leave,
                  stops_tool=True),
}


@pytest.fixture(params=["memory", "redis"])
def hub_env(request) -> Iterator[Env]:
    redis = RedisServer() if request.param == "redis" else None
    yield Env(redis)
    if redis is not None:
        redis.stop()


@pytest.mark.parametrize("driver", ["evented", "greenlets", "threads"])
@pytest.mark.parametrize("name", list(ROWS))
def test_every_producer_runs_tool_steps_the_same(name: str, driver: str, hub_env: Env,
                                                 monkeypatch) -> None:
    env = hub_env
    row = ROWS[name]
    kind: type[Producer] = EventedProducer if driver == "evented" else TaskProducer
    if driver == "threads":
        monkeypatch.setattr(tasks.Task, "stop", _stop_like_a_thread)
    config = {**DEFAULTS, "RILL_HEARTBEAT_SECONDS": 0.3, "RILL_PRODUCER_LEASE_SECONDS": 1.0}
    if env.redis is not None:
        config["RILL_REDIS_URL"] = env.redis.url
    app = Flask(__name__)
    app.config.update(DEFAULTS)
    hub = create(config)

    def handle(server: Server, sock: socket.socket, index: int) -> None:
        with sock:
            while server.read_request(sock):
                if len(server.requests) == 1:
                    sock.sendall(CHUNKED + _call(*row.call) + TERMINATOR)
                else:
                    sock.sendall(CHUNKED + token("a") + token("b") + END + TERMINATOR)

    server = Server(handle)
    del STOPPED[:]
    try:
        run = Run(server, row.limits, hub=hub, driver=kind, tools=TOOLS, app=app)
        row.act(run, env)
        events = events_only(parse(_subscribe(run)))
        gevent.sleep(0.2)
    finally:
        server.close()
        getattr(hub, "close", lambda: None)()
    last = events[-1]
    assert (last.event, last.json.get("finish_reason") or last.json.get("code")) == row.ending
    assert text_of(events) == row.text
    assert [e.json["content"] for e in events if e.event == "tool_result"] == row.results
    assert [e.id for e in events] == [str(i) for i in range(len(events))]
    assert run.producer.finished and run.finished == 1
    assert ([row.call[1]["mark"]] if row.stops_tool else []) == STOPPED
    assert len(server.requests) == (1 if row.stops_tool else 2)
