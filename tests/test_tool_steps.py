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

from rill import errors
from rill.config import DEFAULTS
from rill.generation import Limits
from rill.tools import ToolRegistry
from tests.conftest import RedisServer
from tests.sse_client import events_only, parse, text_of
from tests.test_evented import CHUNKED, END, TERMINATOR, Run, Server, sse, token
from tests.test_producers import FAST, SLOW, Env, _leave, _subscribe, driven

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
    kind, hub = driven(driver, env, monkeypatch)
    app = Flask(__name__)
    app.config.update(DEFAULTS)

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


def _fragment(index: int, arguments: str, head: str | None = None) -> tuple[str, dict]:
    return ("tool_call", {"index": index, "id": head, "name": head and "lookup",
                          "arguments": arguments})


def test_a_steps_calls_past_the_limits_are_refused_as_results_and_its_usage_is_summed() -> None:
    """A call's arguments longer than RILL_MAX_MESSAGE_CHARS and calls past
    RILL_MAX_TOOL_CALLS are not run: the model gets a refusal as their result. The answer's
    usage is the steps' summed."""
    from rill.chat_request import ChatRequest
    from rill.steps import END, RUN, plan
    from tests.conftest import FakeUpstream

    app = Flask(__name__)
    app.config.update({**DEFAULTS, "RILL_MAX_TOOL_CALLS": 2, "RILL_MAX_MESSAGE_CHARS": 20})
    user = {"role": "user", "content": "Hi"}
    upstream = FakeUpstream()
    request, tool_steps = plan(ChatRequest(messages=[user], model="m"), TOOLS, upstream,
                               None, app)
    assert tool_steps is not None and request.tools == TOOLS.offered(None)
    tool_steps.gather([("delta", {"content": "Let me see."}), _fragment(0, '{"q": ', "c0"),
                       _fragment(1, '{"q": "', "c1"), _fragment(0, '"x"}'),
                       _fragment(1, "y" * 30 + '"}'), _fragment(2, '{"q": "z"}', "c2")])
    usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
    assert tool_steps.finish({"finish_reason": "tool_calls", "usage": usage})[0] == RUN
    recorded: list = []
    stream = tool_steps.run(lambda events: recorded.extend(events) or True)
    assert stream is not None
    assert [(kind, data["id"], data["ok"], data["content"]) for kind, data in recorded] == [
        ("tool_result", "c0", True, "found x"),
        ("tool_result", "c1", False, "The arguments for lookup are longer than 20 "
                                     "characters; the call was not run."),
        ("tool_result", "c2", False, "Too many tool calls at once (at most 2); this one "
                                     "was not run.")]
    (sent,) = upstream.requests
    assert sent.first_call == 3
    assert sent.messages[1] == {"role": "assistant", "content": "Let me see.", "tool_calls": [
        {"id": f"c{i}", "type": "function", "function": {"name": "lookup", "arguments": a}}
        for i, a in enumerate(['{"q": "x"}', "", ""])]}
    assert [m["tool_call_id"] for m in sent.messages[2:]] == ["c0", "c1", "c2"]
    what, done = tool_steps.finish({"finish_reason": "stop", "usage": usage})
    assert (what, done) == (END, ("done", {"finish_reason": "stop", "usage": {
        "prompt_tokens": 6, "completion_tokens": 10, "total_tokens": 16}}))
