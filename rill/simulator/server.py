"""The simulator's HTTP/1.1 server: requests (keep-alive, ``Content-Length`` bodies), routes,
the record of chat requests, and ``main`` (the ``rill-simulator`` console script)."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import signal
import socket
import time
import urllib.parse
from collections import Counter, deque
from typing import IO, Any, NamedTuple

import gevent
import orjson
from gevent.server import StreamServer

from . import scenarios
from .plan import DEFAULT_MODEL, make_plan, parse_params
from .wire import ClientGone, Cut, Wire, error_body, json_response

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_RECORDS = 100_000  # oldest records are dropped beyond this


class _Request(NamedTuple):
    method: str
    path: str
    query: str
    keep_alive: bool
    headers: dict[str, str]  # lower-cased names
    body: bytes


class Simulator:
    """Serves connections (``handle`` is a ``StreamServer`` handler); records chat requests.

    ``records``: the last ``MAX_RECORDS`` chat requests, shaped as ``GET /_sim/requests``
    returns them. ``failures``: ``fault=status`` requests counted per ``tag``.
    """

    def __init__(self, ttft_ms: int = 0, itl_ms: int = 0, tokens: int = 20) -> None:
        self.defaults: dict[str, Any] = {"tokens": tokens, "ttft_ms": ttft_ms, "itl_ms": itl_ms}
        self.records: deque[dict[str, Any]] = deque(maxlen=MAX_RECORDS)
        self.failures: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._conns = itertools.count(1)

    def handle(self, sock: socket.socket, address: Any) -> None:
        """Serve one connection: its requests in turn while it is kept alive."""
        conn = next(self._conns)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # events are small writes
        rfile = sock.makefile("rb")
        try:
            while (request := _read_request(rfile, sock)) and self._dispatch(sock, conn, request):
                pass
        except ValueError as exc:
            with contextlib.suppress(OSError):
                sock.sendall(json_response(400, error_body(400, str(exc)), close=True))
        except OSError:
            pass
        finally:
            rfile.close()
            sock.close()

    def _dispatch(self, sock: socket.socket, conn: int, request: _Request) -> bool:
        """Answer one request; return whether the connection may serve another."""
        route = (request.method, request.path)
        status: int = 200
        payload: Any = None
        if route == ("POST", "/v1/chat/completions"):
            return self._chat(sock, conn, request) and request.keep_alive
        if route == ("GET", "/_sim/requests"):
            tag = urllib.parse.parse_qs(request.query).get("tag")
            payload = [r for r in self.records if not tag or r["params"].get("tag") == tag[0]]
        elif route == ("DELETE", "/_sim/requests"):
            self.records.clear()
            payload = {"cleared": True}
        elif route == ("GET", "/v1/models"):
            payload = {"object": "list", "data": [
                {"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "rill"}]}
        else:
            status = 404
            payload = error_body(404, f"No route for {request.method} {request.path}",
                                 "not_found")
        sock.sendall(json_response(status, payload, close=not request.keep_alive))
        return request.keep_alive

    def _chat(self, sock: socket.socket, conn: int, request: _Request) -> bool:
        """Serve one chat completion and record it; return False if the socket must close."""
        try:
            body = orjson.loads(request.body)
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            params = parse_params(str(body.get("model") or DEFAULT_MODEL), self.defaults)
        except ValueError as exc:
            sock.sendall(json_response(400, error_body(400, str(exc))))
            return True
        record = {"id": next(self._ids), "model": body.get("model"), "params": params,
                  "body": body, "headers": request.headers, "conn": conn,
                  "started": time.time(), "ended": None, "outcome": "running",
                  "tokens_sent": 0}
        self.records.append(record)
        wire = Wire(sock)
        try:
            record["outcome"] = self._respond(wire, params, body, record)
            return True
        except Cut:
            record["outcome"] = "fault"
            return False
        except (ClientGone, OSError):
            record["outcome"] = "client_closed"
            return False
        finally:
            wire.close()
            record["ended"] = time.time()

    def _respond(self, wire: Wire, params: dict[str, Any], body: dict[str, Any],
                 record: dict[str, Any]) -> str:
        """Send the scenario's response; return the outcome (``completed`` or ``fault``)."""
        fault = params.get("fault")
        if fault == "status" and self._should_fail(params):
            status = params.get("status", 500)
            retry = params.get("retry_after", 1 if status == 429 else None)
            extra = {} if retry is None else {"Retry-After": str(retry)}
            wire.send(json_response(status, error_body(status), headers=extra))
            return "fault"
        if fault == "hang":
            wire.wait(None)
        plan = make_plan(params, body, record["id"])
        if not body.get("stream"):
            return scenarios.respond_whole(wire, plan, record)
        return scenarios.stream(wire, plan, record)

    def _should_fail(self, params: dict[str, Any]) -> bool:
        if "fail_first" not in params:
            return True
        tag = str(params.get("tag", ""))
        self.failures[tag] += 1
        return self.failures[tag] <= params["fail_first"]


def _read_line(rfile: IO[bytes]) -> bytes:
    line = rfile.readline(65537)
    if line and not line.endswith(b"\n"):
        raise ValueError("line too long, or the connection closed mid-line")
    return line


def _read_request(rfile: IO[bytes], sock: socket.socket) -> _Request | None:
    """Read one HTTP/1.1 request; ``None`` at a clean end of the connection.

    The body must come with ``Content-Length`` (at most ``MAX_BODY_BYTES``); answers
    ``Expect: 100-continue``. Raises ``ValueError`` for a malformed request.
    """
    line = _read_line(rfile)
    if not line.strip():
        return None
    method, target, version = line.decode("latin-1").split()
    headers: dict[str, str] = {}
    while (header := _read_line(rfile)) not in (b"\r\n", b"\n"):
        name, sep, value = header.decode("latin-1").partition(":")
        if not sep or len(headers) > 100:
            raise ValueError("malformed header")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", ""):
        raise ValueError("chunked request bodies are not supported")
    if (length := int(headers.get("content-length", "0"))) > MAX_BODY_BYTES:
        raise ValueError("body too large")
    if headers.get("expect", "").lower() == "100-continue":
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    body = rfile.read(length) if length else b""
    if len(body) != length:
        raise ValueError("the connection closed mid-body")
    connection = headers.get("connection", "").lower()
    keep = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    path, _, query = target.partition("?")
    return _Request(method, path, query, keep, headers, body)


def main(argv: list[str] | None = None) -> None:
    """Run the simulator until SIGTERM or SIGINT (console script ``rill-simulator``)."""
    from gevent import monkey

    monkey.patch_all()
    parser = argparse.ArgumentParser(
        prog="rill-simulator",
        description="An OpenAI-compatible upstream simulator, for tests, benchmarks and "
                    "trying Rill keyless.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--ttft-ms", type=int, default=0, help="default time to first token")
    parser.add_argument("--itl-ms", type=int, default=0, help="default inter-token latency")
    parser.add_argument("--tokens", type=int, default=20, help="default reply length")
    parser.add_argument("--backlog", type=int, default=2048, help="listen backlog")
    args = parser.parse_args(argv)
    _raise_open_files_limit()
    simulator = Simulator(args.ttft_ms, args.itl_ms, args.tokens)
    server = StreamServer((args.host, args.port), simulator.handle, backlog=args.backlog)
    for signum in (signal.SIGTERM, signal.SIGINT):  # before the line: callers may stop at once
        gevent.signal_handler(signum, server.stop)
    server.start()
    host, port = server.address[:2]
    print(f"rill-simulator listening on http://{host}:{port}", flush=True)
    server.serve_forever()


def _raise_open_files_limit() -> None:
    """Lift the soft open-files limit to the hard one: every stream holds a socket."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):  # some refuse RLIM_INFINITY: keep soft
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
