"""Logs of a real gunicorn gevent worker: every line JSON, request ids end to end, one
summary line per stream, and never the prompt."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest

from tests.integration.conftest import relay_env, run_rill, sim_model
from tests.sse_client import events_only, parse

pytestmark = pytest.mark.integration


def lines_of(log: str) -> list[dict]:
    return [json.loads(line) for line in log.splitlines() if line.strip()]


def wait_for(server, predicate, timeout: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in lines_of(server.log()) if predicate(line)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_log_lines_are_json_with_request_ids_and_a_summary_per_stream(simulator) -> None:
    prompt = f"my private question about {uuid.uuid4().hex}"
    trace = f"trace-{uuid.uuid4().hex[:8]}"
    with run_rill(relay_env(simulator), "logs") as server:
        model, _ = sim_model(tokens=5, itl_ms=5)
        body = {"messages": [{"role": "user", "content": prompt}], "model": model}
        with server.chat(body, headers={"X-Request-ID": trace}) as response:
            assert response.headers["X-Request-ID"] == trace
            events = events_only(parse(response.iter_content(chunk_size=None)))
        assert events[-1].event == "done"
        cut_model, _ = sim_model(tokens=5, fault="cut", after=2)
        with server.chat({**body, "model": cut_model}) as response:
            generated = response.headers["X-Request-ID"]
            assert events_only(parse(response.iter_content(chunk_size=None)))[-1].json[
                "code"] == "upstream_cut"
        with server.chat({**body, "model": sim_model(fault="status", status=401)[0]}) as refused:
            assert refused.status_code == 502
            refused_id = refused.headers["X-Request-ID"]
        ends = wait_for(server, lambda line: line.get("event") == "stream_end"
                        and line.get("request_id") == generated)
        wait_for(server, lambda line: line.get("request_id") == refused_id
                 and line["logger"] == "gunicorn.access")  # written once the body is sent
        log = server.log()

    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    lines = lines_of(log)  # raises if any line is not JSON
    assert {"gunicorn.error", "gunicorn.access", "rill.generation"} <= {
        line["logger"] for line in lines}
    assert prompt not in log, "the prompt is never logged"

    [completed] = [line for line in lines if line.get("event") == "stream_end"
                   and line.get("request_id") == trace]
    assert completed["outcome"] == "completed" and completed["model"] == model
    assert completed["tokens"] == 5 and completed["client"] == "127.0.0.1"
    assert 0 <= completed["ttft_ms"] <= completed["duration_ms"]
    assert completed["stream_id"] == events[0].json["stream_id"]
    assert [e["outcome"] for e in ends] == ["upstream_cut"]

    access = [line for line in lines if line["logger"] == "gunicorn.access"
              and line.get("path") == "/api/chat"]
    assert {line["request_id"] for line in access} >= {trace, generated}
    assert {line["status"] for line in access} == {200, 502}
    [upstream_401] = [line for line in lines if "upstream answered HTTP 401" in line["message"]]
    assert upstream_401["request_id"] == refused_id, "a request's own log lines carry its id"
