"""JSON log lines, request ids and the per-stream summary line (rill.logs, rill.request_ids)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from typing import Any

import gevent
import pytest
from gunicorn.glogging import SafeAtoms

from app import create_app
from rill import logs
from tests.conftest import TEST_CONFIG

PROMPT = "the secret recipe for purple elephant soup"


def record(name: str = "rill.test", msg: str = "hello %s", args: Any = ("world",),
           **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_a_record_is_one_json_line_with_time_level_logger_message_and_extras() -> None:
    line = logs.JsonFormatter().format(record(stream_id="abc", tokens=5))
    assert "\n" not in line
    data = json.loads(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data.pop("time"))
    assert data == {"level": "INFO", "logger": "rill.test", "pid": os.getpid(),
                    "message": "hello world", "stream_id": "abc", "tokens": 5}


def test_an_exception_stays_inside_the_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    data = json.loads(logs.JsonFormatter().format(rec))
    assert data["message"] == "failed"
    assert "ValueError: boom" in data["exc_info"]


def access_atoms(**overrides: str) -> dict[str, str]:
    atoms = {"h": "10.0.0.7", "l": "-", "u": "-", "t": "[now]", "r": "GET /api/x?a=1 HTTP/1.1",
             "m": "GET", "U": "/api/x", "q": "a=1", "H": "HTTP/1.1", "s": "200", "B": "12",
             "b": "12", "f": "-", "a": "curl/8", "D": "2500", "{x-request-id}o": "req-1"}
    return {**atoms, **overrides}


def test_a_gunicorn_access_record_becomes_fields_and_keeps_its_request_id() -> None:
    fmt = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
    rec = record("gunicorn.access", fmt, (access_atoms(),))
    data = json.loads(logs.JsonFormatter().format(rec))
    assert data["message"] == '10.0.0.7 - - [now] "GET /api/x?a=1 HTTP/1.1" 200 12 "-" "curl/8"'
    assert {k: data[k] for k in ("remote_addr", "method", "path", "query", "status", "bytes",
                                 "duration_ms", "request_id", "user_agent")} == {
        "remote_addr": "10.0.0.7", "method": "GET", "path": "/api/x", "query": "a=1",
        "status": 200, "bytes": 12, "duration_ms": 2.5, "request_id": "req-1",
        "user_agent": "curl/8"}


def test_secrets_in_access_atoms_are_masked_and_the_fields_kept() -> None:
    key = "sk-live-0123456789abcdef"
    rec = record("gunicorn.access", '"%(r)s" %(s)s',
                 (access_atoms(r=f"GET /x?key={key} HTTP/1.1", q=f"key={key}"),))
    logs.RedactingFilter().filter(rec)
    data = json.loads(logs.JsonFormatter().format(rec))
    assert key not in json.dumps(data)
    assert data["query"] == "key=[redacted]" and data["status"] == 200


def test_a_header_the_access_format_names_is_masked_too() -> None:
    token = "Bearer abc.def-ghi"
    atoms = SafeAtoms(access_atoms(**{"{authorization}i": token}))  # as gunicorn passes them
    rec = record("gunicorn.access", '"%(r)s" %({Authorization}i)s', (atoms,))
    logs.RedactingFilter().filter(rec)
    line = logs.JsonFormatter().format(rec)
    assert "abc.def-ghi" not in line and "Bearer [redacted]" in line


def test_importing_rill_logs_imports_neither_flask_nor_a_network_library() -> None:
    """gunicorn.conf.py imports rill.logs in the arbiter. Had that imported Flask (which
    imports ssl), every worker would inherit an unpatched ssl and HTTPS upstreams fail."""
    code = ("import sys, rill.logs; "
            "print(sorted(m for m in ('flask', 'ssl', 'socket', 'openai', 'gevent') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_the_gunicorn_logging_config_loads_with_dictconfig() -> None:
    code = ("import logging.config, rill.logs; "
            "logging.config.dictConfig(rill.logs.gunicorn_config('debug')); "
            "logging.getLogger('gunicorn.error').debug('hi %s', 'there')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"OPENAI_API_KEY": "sk-abc"}).stdout
    assert json.loads(out)["message"] == "hi there"


@pytest.mark.parametrize(("given", "peer", "accepted"), [
    ("trace-123", "127.0.0.1", True),
    ("a" * 128, "127.0.0.1", True),
    ("a" * 129, "127.0.0.1", False),
    ("bad id", "127.0.0.1", False),
    ("x\u00e9", "127.0.0.1", False),
    ("trace-123", "203.0.113.9", False),  # not a trusted proxy: a client's own claim
])
def test_x_request_id_is_taken_only_from_a_trusted_proxy_and_only_when_well_formed(
        client, given, peer, accepted) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": given},
                          environ_base={"REMOTE_ADDR": peer})
    returned = response.headers["X-Request-ID"]
    if accepted:
        assert returned == given
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", returned)


def test_every_response_gets_a_fresh_request_id_errors_included(client) -> None:
    ids = {client.get("/healthz").headers["X-Request-ID"] for _ in range(3)}
    assert len(ids) == 3
    bad = client.post("/api/chat", data=b"{", content_type="application/json")
    assert bad.status_code == 400 and re.fullmatch(r"[0-9a-f]{32}", bad.headers["X-Request-ID"])


def test_behind_one_proxy_the_proxy_is_trusted_not_the_client_it_forwards(config) -> None:
    """With RILL_PROXY_HOPS=1, ProxyFix rewrites REMOTE_ADDR to the client's address: the
    trust check must look at the TCP peer (the proxy), as header auth must too."""
    app = create_app({**TEST_CONFIG, **config, "RILL_PROXY_HOPS": 1, "RILL_AUTH": "header"})
    client = app.test_client()
    response = client.get("/api/openapi.json", headers={
        "X-Request-ID": "from-nginx", "X-Forwarded-For": "203.0.113.9"})
    assert response.headers["X-Request-ID"] == "from-nginx"
    body = {"messages": [{"role": "user", "content": "Hi"}]}
    ok = client.post("/api/chat", json=body, headers={
        "X-Forwarded-User": "alice", "X-Forwarded-For": "203.0.113.9"})
    assert ok.status_code == 200
    ok.close()


def test_a_stream_logs_one_summary_line_without_the_prompt(client, caplog) -> None:
    caplog.set_level(logging.INFO)
    body = {"messages": [{"role": "user", "content": PROMPT}]}
    response = client.post("/api/chat", json=body, headers={"X-Request-ID": "req-sum"})
    assert b"event: done" in response.get_data()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        ends = [r for r in caplog.records if getattr(r, "event", None) == "stream_end"
                and getattr(r, "request_id", None) == "req-sum"]  # not earlier tests' streams
        if ends:
            break
        gevent.sleep(0.02)  # the producer's greenlets log it
    [end] = ends
    assert (end.outcome, end.model, end.request_id, end.client) == (
        "completed", "rill-demo", "req-sum", "127.0.0.1")
    assert end.tokens > 0 and end.ttft_ms >= 0 and end.duration_ms >= end.ttft_ms
    assert len(end.stream_id) == 22
    assert PROMPT not in caplog.text
    assert all(PROMPT not in repr(r.__dict__) for r in caplog.records)


def test_httpx_does_not_log_a_line_per_upstream_request() -> None:
    code = ("import logging, logging.config, rill.logs; "
            "logging.config.dictConfig(rill.logs.gunicorn_config('info')); "
            "[logging.getLogger(n).info('HTTP Request: POST') for n in ('httpx', 'httpx2')]; "
            "logging.getLogger('httpx2').warning('a real problem')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert [json.loads(line)["message"] for line in out.splitlines()] == ["a real problem"]


def test_gunicorn_logging_skips_thread_names(monkeypatch) -> None:
    """Under gevent each new greenlet's first record built a dummy thread for its name."""
    monkeypatch.setattr(logging, "logThreads", True)
    monkeypatch.setattr(logging, "logMultiprocessing", True)
    monkeypatch.setattr(logging, "_srcfile", logging._srcfile)  # type: ignore[attr-defined]
    logs.gunicorn_config()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert (record.threadName, record.processName) == (None, None)
    assert record.process == os.getpid()


def test_gunicorn_logging_skips_the_callers_stack_walk(monkeypatch) -> None:
    """No line shows a record's file, line or function: no stack walk per record."""
    monkeypatch.setattr(logging, "_srcfile", logging._srcfile)  # type: ignore[attr-defined]
    logs.gunicorn_config()
    seen: list[logging.LogRecord] = []
    logger = logging.getLogger("rill.test.srcfile")
    logger.addHandler(handler := logging.Handler())
    handler.emit = seen.append  # type: ignore[method-assign]
    try:
        logger.warning("m")
    finally:
        logger.removeHandler(handler)
    assert (seen[0].funcName, seen[0].lineno) == ("(unknown function)", 0)


def test_the_json_formatter_redacts_tracebacks_and_every_extra_field() -> None:
    logs.learn(["learned-secret-0042"])
    try:
        raise RuntimeError("key sk-abcdefghijkl and learned-secret-0042")
    except RuntimeError:
        rec = record(headers={"authorization": "Bearer abc.def"}, items=("learned-secret-0042",
                     3, None), obj=ValueError("learned-secret-0042"))
        rec.exc_info = sys.exc_info()
    line = logs.JsonFormatter().format(rec)  # no filter ran: the formatter alone
    assert "abc.def" not in line and "learned-secret-0042" not in line
    assert "sk-abcdefghijkl" not in line
    data = json.loads(line)
    assert data["headers"] == {"authorization": "Bearer [redacted]"}
    assert data["items"] == ["[redacted]", 3, None] and data["obj"] == "[redacted]"
    assert "RuntimeError: key [redacted] and [redacted]" in data["exc_info"]
