"""How a server-side tool call runs: in the app context, validated, bounded, stopped.

Each run-time behaviour is checked in both drivers (:mod:`rill.tasks`): ``greenlet`` (gevent,
as in a gevent worker) and ``thread`` (a gthread worker or ``flask run``).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time

import gevent
import gevent.event
import pytest
from flask import Flask, current_app, g
from pydantic import BaseModel

from rill import logs, tasks
from rill.auth import current_user
from rill.tools import ToolCall, ToolFailure, ToolRegistry
from rill.tools.run import bound

SECRET = "sk-live-0123456789abcdefXYZ"  # an OpenAI-style key: masked wherever it shows
LEARNED = "hunter2-correct-horse"  # a configured secret (rill.logs.learn)


@pytest.fixture(params=["greenlet", "thread"])
def driver(request, monkeypatch) -> str:
    if request.param == "thread":
        monkeypatch.setattr(tasks, "cooperative", lambda: False)
    return str(request.param)


@pytest.fixture
def app() -> Flask:
    app = Flask("host")
    app.config.update(RILL_TOOL_TIMEOUT_SECONDS=5.0, RILL_TOOL_RESULT_MAX_BYTES=200)
    return app


def _sleep(driver: str, seconds: float) -> None:
    (gevent.sleep if driver == "greenlet" else time.sleep)(seconds)


def call(name: str, arguments: str = "{}") -> ToolCall:
    return ToolCall("call_1", name, arguments)


def test_a_tool_runs_in_the_app_context_with_the_user(driver, app) -> None:
    registry = ToolRegistry()

    @registry.tool
    def whoami() -> dict:
        return {"app": current_app.name, "user": g.rill_user, "current_user": current_user(),
                "thread": threading.current_thread() is not main}

    main = threading.current_thread()
    result = registry.run(call("whoami"), "alice", app)
    assert result.to_dict() == {
        "id": "call_1", "name": "whoami", "ok": True, "elapsed_ms": result.elapsed_ms,
        "content": '{"app":"host","user":"alice","current_user":"alice",'
                   f'"thread":{"true" if driver == "thread" else "false"}}}'}
    assert result.message() == {"role": "tool", "tool_call_id": "call_1",
                                "content": result.content}


@pytest.mark.parametrize(("arguments", "says"), [
    ('{"order_id": ', "The arguments for refund are not valid JSON."),
    ("[7]", "Invalid arguments for refund: arguments: Input should be an object"),
    ('{"order_id": "seven"}', "Invalid arguments for refund: order_id: Input should be a "
                              "valid integer, unable to parse string as an integer"),
    ("{}", "Invalid arguments for refund: order_id: Field required"),
    ('{"order_id": 7, "amount": 1e9}',
     "Invalid arguments for refund: amount: Extra inputs are not permitted"),
])
def test_arguments_are_validated_before_the_call(app, arguments, says) -> None:
    registry = ToolRegistry()
    calls = []

    @registry.tool
    def refund(order_id: int, reason: str = "") -> str:
        calls.append(order_id)
        return "refunded"

    result = registry.run(call("refund", arguments), None, app)
    assert (result.ok, result.content) == (False, says)
    assert calls == []
    assert registry.run(call("refund", ' {"order_id": "7"} '), None, app).content == "refunded"


def test_a_call_reads_from_an_assistant_messages_tool_calls_item() -> None:
    assert ToolCall.from_openai({"id": "call_9", "type": "function", "function": {
        "name": "refund", "arguments": '{"order_id": 7}'}}) == ToolCall(
            "call_9", "refund", '{"order_id": 7}')
    assert ToolCall.from_openai({"id": "call_9"}) == ToolCall("call_9", "", "")


def test_empty_arguments_are_no_arguments(app) -> None:
    registry = ToolRegistry()
    registry.tool(name="now")(lambda: "noon")
    assert registry.run(call("now", ""), None, app).content == "noon"


def test_a_tool_past_its_timeout_is_stopped(driver, app) -> None:
    registry = ToolRegistry()
    release, ended = threading.Event(), []

    @registry.tool(timeout=0.2)
    def slow() -> str:
        try:
            if driver == "greenlet":
                gevent.sleep(30)
            else:
                release.wait(30)
            return "late"
        finally:
            ended.append("ended")

    started = time.monotonic()
    run = registry.start(call("slow"), None, app)
    result = run.wait()
    assert time.monotonic() - started < 5
    assert (result.ok, result.content) == (False, "The tool slow did not finish within 0.2 s.")
    if driver == "greenlet":
        assert ended == ["ended"]  # killed: its finally ran
    else:
        assert ended == []  # a thread cannot be killed: it runs on, abandoned
        release.set()
        _wait_for(lambda: ended == ["ended"])
    assert run.result is result  # what it returned late was dropped


def test_a_run_ends_by_its_deadline_when_no_one_waits(driver, app) -> None:
    """``on_done`` hears of every ending once, the deadline's too: a run needs no waiter."""
    registry = ToolRegistry()
    heard, release = [], threading.Event()

    @registry.tool(timeout=0.2)
    def stuck() -> str:
        while not release.is_set():
            _sleep(driver, 0.01)
        return "late"

    run = registry.start(call("stuck"), None, app, on_done=heard.append)
    _wait_for(lambda: heard)
    assert heard == [run.result] and heard[0].content.startswith("The tool stuck did not")
    if driver == "greenlet":
        assert run._task is not None and run._task.dead
    release.set()
    registry.start(call("stuck"), None, app, on_done=heard.append).wait()
    assert [r.content for r in heard[1:]] == ["late"]
    registry.start(call("nope"), None, app, on_done=heard.append)
    assert heard[2].content == "No tool named 'nope' is available."


def test_cancel_stops_a_running_tool(driver, app) -> None:
    registry = ToolRegistry()
    started, release = threading.Event(), threading.Event()

    @registry.tool
    def forever() -> str:
        started.set()
        while not release.is_set():
            _sleep(driver, 0.01)
        return "done"

    run = registry.start(call("forever"), None, app)
    _wait_for(started.is_set)
    assert not run.done
    run.cancel()
    run.cancel()  # idempotent
    assert (run.wait().ok, run.wait().content) == (False, "The tool call was cancelled.")
    if driver == "greenlet":
        assert run._task is not None and run._task.dead
    release.set()


def test_cancel_from_a_callback_in_gevents_hub_does_not_block(app) -> None:
    """The evented producer stops a generation from libev callbacks in gevent's hub, where
    nothing may block: the kill is scheduled there, not awaited."""
    registry = ToolRegistry()
    started = gevent.event.Event()

    @registry.tool
    def forever() -> str:
        started.set()
        gevent.sleep(30)
        return "late"

    heard: list = []
    run = registry.start(call("forever"), None, app, on_done=heard.append)
    started.wait(5)
    gevent.get_hub().loop.run_callback(run.cancel)
    _wait_for(lambda: run._task is not None and run._task.dead)
    assert [r.content for r in heard] == ["The tool call was cancelled."]


def test_an_exception_reaches_the_model_as_its_class_name_only(driver, app, caplog,
                                                               monkeypatch) -> None:
    """The log line is redacted where it is made: not only by the handlers' filter (taken
    off here), which a host's own logging setup may not have."""
    registry = ToolRegistry()
    logs.learn([LEARNED])
    for handler in logging.getLogger().handlers:
        monkeypatch.setattr(handler, "filters", [
            f for f in handler.filters if not isinstance(f, logs.RedactingFilter)])

    @registry.tool
    def connect() -> str:
        raise ConnectionError(f"login with {SECRET} and password {LEARNED} refused")

    with caplog.at_level(logging.WARNING, logger="rill.tools"):
        result = registry.run(call("connect"), "alice", app)
    assert (result.ok, result.content) == (False, "The tool connect failed (ConnectionError).")
    logged = caplog.text
    assert "ConnectionError" in logged and 'in connect\n    raise ConnectionError' in logged
    assert SECRET not in logged and LEARNED not in logged
    assert logged.count("[redacted]") == 2


def test_a_tool_that_calls_sys_exit_fails_and_the_worker_lives_on(driver, app) -> None:
    """SystemExit (argparse's way out, say) in a greenlet would reach gevent's hub and end
    the worker; it is a failed call like any other."""
    registry = ToolRegistry()
    registry.tool(name="parse")(lambda: exit(2))
    result = registry.run(call("parse"), None, app)
    assert (result.ok, result.content) == (False, "The tool parse failed (SystemExit).")
    gevent.sleep(0.05)  # the hub runs on


def test_a_tool_failure_tells_the_model_in_the_tools_words(app) -> None:
    registry = ToolRegistry()

    @registry.tool
    def lookup(order_id: int) -> str:
        raise ToolFailure(f"No order {order_id}.")

    assert registry.run(call("lookup", '{"order_id": 3}'), None, app).content == "No order 3."


class Order(BaseModel):
    id: int
    placed: datetime.date


@dataclasses.dataclass
class Parcel:
    weight_kg: float


@pytest.mark.parametrize(("value", "content"), [
    ("plain text", "plain text"),
    ({"a": [1, 2.5, None, True]}, '{"a":[1,2.5,null,true]}'),
    (Order(id=1, placed=datetime.date(2026, 1, 2)), '{"id":1,"placed":"2026-01-02"}'),
    ([Parcel(2.5)], '[{"weight_kg":2.5}]'),
    (None, "null"),
])
def test_results_that_are_not_strings_are_json(app, value, content) -> None:
    registry = ToolRegistry()
    registry.tool(name="give")(lambda: value)
    result = registry.run(call("give"), None, app)
    assert (result.ok, result.content) == (True, content)


def test_a_result_that_is_not_json_is_a_failure(app) -> None:
    registry = ToolRegistry()
    registry.tool(name="give")(lambda: object())
    result = registry.run(call("give"), None, app)
    assert (result.ok, result.content) == (False, "The tool give returned a result that is "
                                                  "not JSON.")


def test_long_results_are_cut_to_the_limit_and_marked(app) -> None:
    registry = ToolRegistry()
    registry.tool(name="essay")(lambda: "é" * 1000)  # 2000 bytes
    content = registry.run(call("essay"), None, app).content
    assert len(content.encode()) <= 200
    assert content.endswith("\n[truncated: the tool's result was 2000 bytes]")
    assert content.startswith("é" * 70) and "\ufffd" not in content
    assert bound("short", 200) == "short"


def _wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        gevent.sleep(0.01)
