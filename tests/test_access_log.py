"""gunicorn's access line through Rill's logger class: the same line, fewer atoms built."""

from __future__ import annotations

import datetime
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger

from rill.access_log import AccessLogger

ENVIRON = {
    "REQUEST_METHOD": "POST", "RAW_URI": "/api/chat?x=1", "PATH_INFO": "/api/chat",
    "QUERY_STRING": "x=1", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.7",
    "HTTP_USER_AGENT": "curl/8", "HTTP_REFERER": "https://a.example/", "SERVER_NAME": "h",
    "HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz", "wsgi.url_scheme": "https",
    "HTTP_X_FORWARDED_FOR": "1.2.3.4", "SCRIPT_NAME": "",
}
REQ = SimpleNamespace(headers=[("USER-AGENT", "curl/8"), ("X-TRACE", "t-1"),
                               ("AUTHORIZATION", "Basic dXNlcjpwYXNz")])
RESP = SimpleNamespace(status="200 OK", sent=321, headers=[
    ("Content-Type", "text/event-stream"), ("X-Request-ID", "req-9"), ("X-Other", "o")])
TOOK = datetime.timedelta(seconds=1, microseconds=2500)


def loggers(access_format: str) -> tuple[Logger, AccessLogger]:
    config = Config()
    config.set("access_log_format", access_format)
    return Logger(config), AccessLogger(config)


@pytest.mark.parametrize("access_format", [
    Config().access_log_format,  # gunicorn's default
    '%(h)s "%(r)s" %(s)s %(B)s %(D)s %(u)s %(m)s %(U)s %(q)s %(H)s %(L)s %(p)s',
    '%({x-trace}i)s %({X-Request-ID}o)s %({server_name}e)s %({wsgi.url_scheme}e)s',
])
def test_the_line_is_the_one_gunicorn_writes(access_format: str) -> None:
    stock, lean = loggers(access_format)
    atoms = lean.atoms(RESP, REQ, dict(ENVIRON), TOOK)
    expected = stock.atoms(RESP, REQ, dict(ENVIRON), TOOK)
    line = access_format % lean.atoms_wrapper_class(atoms)
    assert line == access_format % stock.atoms_wrapper_class(expected)
    fixed = "hsBmUqHfa"
    assert atoms["t"] and {k: atoms[k] for k in fixed} == {k: expected[k] for k in fixed}


def test_only_the_named_headers_and_environ_become_atoms() -> None:
    _, lean = loggers('%({x-trace}i)s %({server_name}e)s')
    atoms = lean.atoms(RESP, REQ, dict(ENVIRON), TOOK)
    # X-Request-ID always: Rill's JSON line carries it as request_id.
    assert {k for k in atoms if k.endswith(("}i", "}o"))} == {"{x-trace}i", "{x-request-id}o"}
    assert "{server_name}e" in atoms
    assert not {"{script_name}e", "{wsgi.url_scheme}e", "{http_x_forwarded_for}e"} & set(atoms)


def test_a_response_that_sent_nothing_reads_as_gunicorn_reads_it() -> None:
    stock, lean = loggers(Config().access_log_format)
    resp = SimpleNamespace(status="499", headers=[])
    assert lean.atoms(resp, REQ, dict(ENVIRON), TOOK)["b"] == \
        stock.atoms(resp, REQ, dict(ENVIRON), TOOK)["b"] == "-"
