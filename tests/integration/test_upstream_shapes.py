"""Upstreams that send odd things, relayed by gunicorn + gevent from the simulator (issue 14).

Each test names the finding it covers: a malformed chunk (6, 7), a tool-call stream (10), a
negative usage count (5), a 30 MB line (8), an API key with a line break (9).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from rill.simulator import expected_text
from tests.integration.conftest import (
    API_KEY,
    ask,
    free_port,
    relay_env,
    run_rill,
    sim_model,
    start_server,
    stop_server,
)
from tests.sse_client import Event, events_only, parse, text_of

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def read_events(response: requests.Response) -> list[Event]:
    with response:
        assert response.status_code == 200, response.text
        return events_only(parse(response.iter_content(chunk_size=None)))


def ending(events: list[Event]) -> tuple[str, str | None]:
    last = events[-1]
    return last.event, last.json["code"] if last.event == "error" else last.json["finish_reason"]


def wait_idle(url: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (streams := requests.get(f"{url}/readyz", timeout=2).json()["streams"]):
        assert time.monotonic() < deadline, f"/readyz still counts {streams} streams"
        time.sleep(0.02)


@pytest.mark.parametrize("fault", ["cut_json", "choices_dict", "choices_int"])
def test_a_malformed_chunk_ends_with_upstream_malformed_keeping_the_text_before(
        rill, fault) -> None:
    """6: a cut chunk was skipped and the answer ended ``done``; 7: ``choices`` as a dict or
    an int ended ``internal`` and lost the tokens read in the same batch."""
    model, _ = sim_model(tokens=8, fault=fault, after=3)
    events = read_events(rill.chat(ask(model)))
    assert text_of(events) == expected_text(3)
    assert ending(events) == ("error", "upstream_malformed")
    assert "done" not in [e.event for e in events]
    assert [e.id for e in events] == [str(i) for i in range(len(events))]


def test_a_tool_call_stream_ends_with_upstream_unsupported_keeping_its_text(rill) -> None:
    """10: it ended ``done`` ``tool_calls`` with the call dropped, the client told nothing."""
    model, _ = sim_model(tokens=8, fault="tool_calls", after=3)
    events = read_events(rill.chat(ask(model)))
    assert text_of(events) == expected_text(3)
    assert ending(events) == ("error", "upstream_unsupported")
    assert "tool call" in events[-1].json["message"]


def test_negative_usage_never_keeps_a_stream_slot(simulator) -> None:
    """5: the metrics raised before ``on_finish``: every such stream kept its slot."""
    env = relay_env(simulator, RILL_MAX_STREAMS_PER_CLIENT="2")
    with run_rill(env, "negative-usage") as server:
        usages = []
        for _ in range(3):
            model, _ = sim_model(tokens=3, fault="negative_usage")
            events = read_events(server.chat(ask(model)))
            assert (text_of(events), ending(events)) == (expected_text(3), ("done", "stop"))
            usages.append(events[-1].json["usage"])
        wait_idle(server.url)
        events = read_events(server.chat(ask(sim_model(tokens=2)[0])))
        assert (text_of(events), ending(events)) == (expected_text(2), ("done", "stop"))
        wait_idle(server.url)
        metrics = requests.get(f"{server.url}/metrics", timeout=5).text
    assert "rill_active_streams 0.0" in metrics
    assert [usage["completion_tokens"] for usage in usages] == [None] * 3  # dropped, not -5


def _worker_pid(master: int) -> int:
    (pid,) = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(pid)


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def test_a_30_mb_line_ends_promptly_with_upstream_malformed_without_holding_it(
        simulator) -> None:
    """8: the line was joined by repeated concatenation: +93 MB of RSS, about 6 s of CPU."""
    env = relay_env(simulator, RILL_UPSTREAM_MAX_EVENT_BYTES=str(MIB))
    with run_rill(env, "long-line") as server:
        worker = _worker_pid(server.process.pid)
        read_events(server.chat(ask(sim_model(tokens=3)[0])))  # the first stream's imports
        before = _kib(worker, "VmRSS")
        Path(f"/proc/{worker}/clear_refs").write_text("5")  # VmHWM := VmRSS
        model, _ = sim_model(tokens=8, fault="long_line", size=30 * MIB, after=3)
        started = time.monotonic()
        events = read_events(server.chat(ask(model), timeout=60))
        seconds = time.monotonic() - started
        peak = _kib(worker, "VmHWM")
        wait_idle(server.url)
    assert text_of(events) == expected_text(3)
    assert ending(events) == ("error", "upstream_malformed")
    assert seconds < 5, f"took {seconds:.1f} s"
    assert peak - before < 1024 + 6 * 1024, f"RSS grew by {peak - before} KiB"


def test_an_api_key_ending_in_a_newline_is_stripped(simulator) -> None:
    """9: the key's newline was written raw into the upstream request head."""
    with run_rill(relay_env(simulator, OPENAI_API_KEY=f"{API_KEY}\n"), "key-newline") as server:
        model, tag = sim_model(tokens=3)
        events = read_events(server.chat(ask(model)))
    assert (text_of(events), ending(events)) == (expected_text(3), ("done", "stop"))
    record = simulator.find(tag)
    assert record["headers"]["authorization"] == f"Bearer {API_KEY}"
    assert record["headers"]["content-type"] == "application/json"


def test_an_api_key_with_a_line_break_inside_stops_the_start_without_showing_it(
        simulator) -> None:
    """9: ``sk-a\\nX-Evil: 1`` would have added a header of the key's choosing."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RILL_"))}
    env = {**base, **relay_env(simulator, OPENAI_API_KEY="sk-a\nX-Evil: 1"),
           "RILL_BIND": f"127.0.0.1:{port}", "RILL_RATELIMIT_ENABLED": "false"}
    server = start_server([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                           "app:app"], port, env=env, name="key-line-break")
    try:
        returncode = server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        stop_server(server.process)
        raise AssertionError("gunicorn started with a key holding a line break") from None
    output = server.log()
    assert returncode != 0
    assert "OPENAI_API_KEY" in output
    assert "sk-a" not in output and "X-Evil" not in output
