"""An OpenAI-compatible upstream simulator, for tests, benchmarks and trying Rill keyless.

``POST /v1/chat/completions`` streams (or returns) chat completions as OpenAI's chat
completions API does, and replays the shapes other providers send. Each request picks its
scenario in the model name, as a query string, so concurrent callers never interfere::

    sim?tokens=50&ttft_ms=300&itl_ms=20&fault=cut&after=5&shape=reasoning&tag=abc

``GET /_sim/requests[?tag=…]`` lists the chat requests with their outcome (``running``,
``completed``, ``client_closed``, ``fault``); ``DELETE`` clears them. Every stream watches
its client socket, so a client that leaves is seen even while the simulator is silent.

A gevent ``StreamServer`` with its own small HTTP/1.1 layer (keep-alive, chunked bodies)
gives exact control over cuts and stalls and holds thousands of streams. Run it with
``rill-simulator`` or ``python -m rill.simulator``; tests use :class:`SimulatorProcess`.
"""

from __future__ import annotations

import argparse
import contextlib
import http
import itertools
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

import gevent
import orjson
from gevent.event import Event
from gevent.server import StreamServer

BIG_EVENT_BYTES = 150 * 1024
DEFAULT_MODEL = "sim"
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_RECORDS = 100_000  # oldest records are dropped beyond this
YIELD_EVERY = 64  # tokens between hub yields when itl_ms=0
FLUSH_BYTES = 64 * 1024
FAULTS = frozenset({"status", "cut", "stall", "hang"})
SHAPES = frozenset({
    "usage_chunk", "azure_filter", "null_content", "reasoning_content", "reasoning",
    "llamacpp", "finish_abort", "finish_null", "error_in_stream", "malformed", "no_done",
    "big_event", "multiline", "comments"})
_INT_PARAMS = frozenset({"tokens", "ttft_ms", "itl_ms", "after", "status", "fail_first",
                         "reasoning_tokens", "retry_after"})
_WORD = re.compile(r"\S+\s*|\s+")
_ERRORS = {  # status: (message, type, code), worded as OpenAI's
    400: ("Invalid request.", "invalid_request_error", "invalid_request"),
    401: ("Incorrect API key provided.", "invalid_request_error", "invalid_api_key"),
    403: ("You may not use this model.", "invalid_request_error", "permission_denied"),
    404: ("The model does not exist.", "invalid_request_error", "model_not_found"),
    429: ("Rate limit reached for requests.", "requests", "rate_limit_exceeded"),
    500: ("The server had an error processing your request.", "server_error", "internal_error"),
    503: ("The engine is currently overloaded.", "server_error", "overloaded"),
}
_PHRASES = {s.value: s.phrase for s in http.HTTPStatus}
_FILTER_OK = {k: {"filtered": False, "severity": "safe"}
              for k in ("hate", "self_harm", "sexual", "violence")}
_STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
                b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")


def expected_text(tokens: int) -> str:
    """The reply text of ``sim?tokens=N``: ``"tok0 tok1 … tok{N-1} "``."""
    return "".join(f"tok{i} " for i in range(tokens))


def parse_params(model: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """Read scenario parameters from ``model`` (``name?k=v&…``) over ``defaults``.

    Integer params (``tokens``, ``*_ms``, ``after``, ``status``, …) become ``int``, the rest
    stay ``str`` (URL-decoded). ``shape`` may name several, comma-separated. Raises
    ``ValueError`` for a non-integer or negative number, or an unknown fault or shape.
    """
    params = dict(defaults)
    params.update(urllib.parse.parse_qsl(model.partition("?")[2], keep_blank_values=True))
    for key in params.keys() & _INT_PARAMS:
        params[key] = int(params[key])
        if params[key] < 0:
            raise ValueError(f"{key} must not be negative")
    if params.get("fault") not in FAULTS | {None}:
        raise ValueError(f"unknown fault {params['fault']!r}; one of {sorted(FAULTS)}")
    if unknown := _shapes(params) - SHAPES:
        raise ValueError(f"unknown shape {sorted(unknown)}; one of {sorted(SHAPES)}")
    if not 400 <= params.get("status", 500) <= 599:
        raise ValueError("status must be 400-599")
    return params


def _shapes(params: dict[str, Any]) -> frozenset[str]:
    return frozenset(s for s in str(params.get("shape", "")).split(",") if s)


class _ClientGone(Exception):
    """The client closed its connection."""


class _Cut(Exception):
    """The simulator cuts the connection on purpose (``fault=cut``)."""


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
                sock.sendall(_json_response(400, _error_body(400, str(exc)), close=True))
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
            payload = _error_body(404, f"No route for {request.method} {request.path}",
                                  "not_found")
        sock.sendall(_json_response(status, payload, close=not request.keep_alive))
        return request.keep_alive

    def _chat(self, sock: socket.socket, conn: int, request: _Request) -> bool:
        """Serve one chat completion and record it; return False if the socket must close."""
        try:
            body = orjson.loads(request.body)
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            params = parse_params(str(body.get("model") or DEFAULT_MODEL), self.defaults)
        except ValueError as exc:
            sock.sendall(_json_response(400, _error_body(400, str(exc))))
            return True
        record = {"id": next(self._ids), "model": body.get("model"), "params": params,
                  "body": body, "headers": request.headers, "conn": conn,
                  "started": time.time(), "ended": None, "outcome": "running",
                  "tokens_sent": 0}
        self.records.append(record)
        wire = _Wire(sock)
        try:
            record["outcome"] = self._respond(wire, params, body, record)
            return True
        except _Cut:
            record["outcome"] = "fault"
            return False
        except (_ClientGone, OSError):
            record["outcome"] = "client_closed"
            return False
        finally:
            wire.close()
            record["ended"] = time.time()

    def _respond(self, wire: _Wire, params: dict[str, Any], body: dict[str, Any],
                 record: dict[str, Any]) -> str:
        """Send the scenario's response; return the outcome (``completed`` or ``fault``)."""
        fault = params.get("fault")
        if fault == "status" and self._should_fail(params):
            status = params.get("status", 500)
            retry = params.get("retry_after", 1 if status == 429 else None)
            extra = {} if retry is None else {"Retry-After": str(retry)}
            wire.send(_json_response(status, _error_body(status), headers=extra))
            return "fault"
        if fault == "hang":
            wire.wait(None)
        plan = _plan(params, body, record["id"])
        if not body.get("stream"):
            return _respond_whole(wire, plan, record)
        wire.send(_STREAM_HEAD)
        return _stream(wire, plan, record)

    def _should_fail(self, params: dict[str, Any]) -> bool:
        if "fail_first" not in params:
            return True
        tag = str(params.get("tag", ""))
        self.failures[tag] += 1
        return self.failures[tag] <= params["fail_first"]


class _Wire:
    """The response side of a connection while one chat request is served.

    Buffers HTTP chunks (sent before every wait, and every ``FLUSH_BYTES``) and watches the
    socket in a greenlet: EOF or a reset means the client left, and from then on every
    wait or write raises :class:`_ClientGone`.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.multiline = False  # shape=multiline: split data lines, CRLF line ends
        self.gone = Event()
        self._pending: list[bytes] = []
        self._size = 0
        self._watcher = gevent.spawn(self._watch)

    def _watch(self) -> None:
        try:  # peek, so a pipelined request stays for the keep-alive loop
            if self.sock.recv(1, socket.MSG_PEEK):
                return  # the client sent more: its EOF can't be seen without reading
        except OSError:
            pass
        self.gone.set()

    def send(self, data: bytes) -> None:
        """Write anything pending, then ``data``; raise :class:`_ClientGone` if it left."""
        data, self._pending, self._size = b"".join([*self._pending, data]), [], 0
        if self.gone.is_set():
            raise _ClientGone
        if data:
            self.sock.sendall(data)

    def chunk(self, data: bytes) -> None:
        """Queue ``data`` as one HTTP chunk."""
        self._pending.append(b"%x\r\n%s\r\n" % (len(data), data))
        self._size += len(data)
        if self._size >= FLUSH_BYTES:
            self.send(b"")

    def lines(self, *lines: str) -> None:
        """Queue SSE lines and the blank line that ends them, as one chunk."""
        eol = "\r\n" if self.multiline else "\n"
        self.chunk((eol.join(lines) + eol + eol).encode())

    def event(self, payload: dict[str, Any] | str) -> None:
        """Queue one ``data:`` event of compact JSON (or a literal such as ``[DONE]``)."""
        data = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
        head, sep, tail = data.partition(',"')
        if self.multiline and sep:  # receivers join data lines with "\n": still JSON
            self.lines(f"data: {head},", f'data: "{tail}')
        else:
            self.lines(f"data: {data}")

    def end(self) -> None:
        """Send the terminating zero-length chunk (and anything pending)."""
        self.send(b"0\r\n\r\n")

    def wait(self, seconds: float | None) -> None:
        """Send what is pending, then sleep ``seconds`` (``None``: until the client leaves)."""
        self.send(b"")
        if seconds == 0:
            gevent.sleep(0)
        else:
            self.gone.wait(seconds)
        if self.gone.is_set():
            raise _ClientGone

    def close(self) -> None:
        self._watcher.kill()  # before the keep-alive loop reads the socket again


@dataclass
class _Plan:
    """One chat request's reply: texts, timing (s), shapes, fault."""

    ident: str
    model: str
    tokens: list[str]
    reasoning: list[str]
    finish: str | None
    shapes: frozenset[str]
    params: dict[str, Any]
    usage: dict[str, int]
    include_usage: bool
    ttft: float
    itl: float


def _plan(params: dict[str, Any], body: dict[str, Any], record_id: int) -> _Plan:
    """Derive the reply from scenario ``params`` and the request ``body``."""
    shapes = _shapes(params)
    if "text" in params:
        tokens = _WORD.findall(str(params["text"]))
    else:
        tokens = [f"tok{i} " for i in range(params.get("tokens", 20))]
    finish: str | None = "stop"
    caps = [v for k in ("max_tokens", "max_completion_tokens")
            if isinstance(v := body.get(k), int) and v >= 0]
    if caps and len(tokens) > min(caps):
        tokens, finish = tokens[:min(caps)], "length"
    if "finish_abort" in shapes or "finish_null" in shapes:
        finish = "abort" if "finish_abort" in shapes else None
    reasoning = []
    if shapes & {"reasoning", "reasoning_content"}:
        reasoning = [f"think{i} " for i in range(params.get("reasoning_tokens", 5))]
    messages = body.get("messages")
    prompt = sum(len(str(m.get("content", "")).split()) for m in messages
                 if isinstance(m, dict)) if isinstance(messages, list) else 0
    options = body.get("stream_options")
    return _Plan(f"chatcmpl-sim-{record_id}", str(body.get("model") or "").split("?")[0],
                 tokens, reasoning, finish, shapes, params,
                 {"prompt_tokens": prompt, "completion_tokens": len(tokens),
                  "total_tokens": prompt + len(tokens)},
                 isinstance(options, dict) and bool(options.get("include_usage")),
                 params.get("ttft_ms", 0) / 1000, params.get("itl_ms", 0) / 1000)


def _chunk_maker(plan: _Plan) -> Callable[..., dict[str, Any]]:
    """Return ``chunk(delta, finish_reason=None)`` building ``chat.completion.chunk`` dicts.

    ``delta=None`` builds Azure's content-filter chunk, whose choice has no delta at all.
    """
    created = int(time.time())

    def chunk(delta: dict[str, Any] | None, finish_reason: str | None = None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        if delta is None:
            del choice["delta"]
            choice["content_filter_results"] = _FILTER_OK
        data = {"id": plan.ident, "object": "chat.completion.chunk", "created": created,
                "model": plan.model, "choices": [choice]}
        if "llamacpp" in plan.shapes:
            data["system_fingerprint"] = "b4000-sim"
        if plan.include_usage:
            data["usage"] = None  # as OpenAI: null on every chunk but the usage one
        return data

    return chunk


def _stream(wire: _Wire, plan: _Plan, record: dict[str, Any]) -> str:
    """Write one streamed completion after the head; return its outcome.

    Timing: ``ttft`` before the role chunk, ``itl`` before every later token (reasoning
    first). Faults, ``error_in_stream`` and ``malformed`` act after ``after`` content tokens.
    """
    wire.multiline = "multiline" in plan.shapes
    chunk = _chunk_maker(plan)
    if "azure_filter" in plan.shapes:
        wire.event({"choices": [], "created": 0, "id": "", "model": "", "object": "",
                    "prompt_filter_results": [
                        {"prompt_index": 0, "content_filter_results": _FILTER_OK}]})
    wire.wait(plan.ttft)
    wire.event(chunk({"role": "assistant", "content": None if plan.reasoning else ""}))
    key = "reasoning_content" if "reasoning_content" in plan.shapes else "reasoning"
    for i, text in enumerate(plan.reasoning):
        _pace(wire, plan, i)
        wire.event(chunk({key: text, "content": None}))
    if "big_event" in plan.shapes:
        wire.event(chunk({"content": "x" * BIG_EVENT_BYTES}))
    stop_at = min(plan.params.get("after", 2), len(plan.tokens))
    for i, token in enumerate(plan.tokens):
        if i == stop_at and _fault_point(wire, plan):
            return "fault"
        _pace(wire, plan, i + len(plan.reasoning))
        _content_events(wire, chunk, plan.shapes, token)
        record["tokens_sent"] += 1
    if stop_at == len(plan.tokens) and _fault_point(wire, plan):
        return "fault"
    _finish(wire, chunk, plan)
    return "completed"


def _pace(wire: _Wire, plan: _Plan, index: int) -> None:
    """Wait before token ``index`` (0-based): ``itl``, or with none a hub yield every 64."""
    if plan.itl and index:
        wire.wait(plan.itl)
    elif index and index % YIELD_EVERY == 0:
        wire.wait(0)  # never starve the other streams


def _fault_point(wire: _Wire, plan: _Plan) -> bool:
    """Act out what is due after ``after`` tokens; return True if the stream ends here."""
    if plan.params.get("fault") == "cut":
        wire.send(b"")
        raise _Cut
    if plan.params.get("fault") == "stall":
        wire.wait(None)
    if "error_in_stream" in plan.shapes:
        wire.event({"error": {"message": "simulated failure", "type": "server_error",
                              "code": "internal_error"}})
        wire.end()
        return True
    if "malformed" in plan.shapes:
        wire.lines("data: {not json")
    return False


def _content_events(wire: _Wire, chunk: Callable[..., dict[str, Any]],
                    shapes: frozenset[str], text: str) -> None:
    if "null_content" in shapes:
        wire.event(chunk({"content": None}))
        wire.event(chunk({"content": ""}))
    wire.event(chunk({"content": text}))
    if "azure_filter" in shapes:
        wire.event(chunk(None))
    if "comments" in shapes:
        wire.lines(": keep-alive")


def _finish(wire: _Wire, chunk: Callable[..., dict[str, Any]], plan: _Plan) -> None:
    """Send the finish chunk, the usage chunk, ``[DONE]`` and the end, as ``plan`` says."""
    if plan.finish is not None:
        last = chunk({}, plan.finish)
        if "llamacpp" in plan.shapes:
            last["timings"] = {"prompt_n": plan.usage["prompt_tokens"],
                               "predicted_n": plan.usage["completion_tokens"],
                               "predicted_per_second": 50.0}
        wire.event(last)
    if plan.include_usage or plan.shapes & {"usage_chunk", "llamacpp"}:
        usage = chunk({})
        usage["choices"], usage["usage"] = [], plan.usage
        wire.event(usage)
    if "no_done" not in plan.shapes:
        wire.event("[DONE]")
    wire.end()


def _respond_whole(wire: _Wire, plan: _Plan, record: dict[str, Any]) -> str:
    """Answer ``stream: false`` with one ``chat.completion`` after the generation time.

    ``fault=cut`` sends the head and half the body, then closes; ``stall`` stops there.
    """
    message: dict[str, Any] = {"role": "assistant", "content": "".join(plan.tokens)}
    if plan.reasoning:
        key = "reasoning_content" if "reasoning_content" in plan.shapes else "reasoning"
        message[key] = "".join(plan.reasoning)
    body = orjson.dumps({
        "id": plan.ident, "object": "chat.completion", "created": int(time.time()),
        "model": plan.model, "usage": plan.usage,
        "choices": [{"index": 0, "message": message, "finish_reason": plan.finish}]})
    response = _json_response(200, body)
    if plan.params.get("fault") in ("cut", "stall"):
        wire.send(response[:len(response) - len(body) // 2])
        if plan.params.get("fault") == "cut":
            raise _Cut
        wire.wait(None)
    wire.wait(plan.ttft + plan.itl * max(len(plan.tokens) + len(plan.reasoning) - 1, 0))
    wire.send(response)
    record["tokens_sent"] = len(plan.tokens)
    return "completed"


def _error_body(status: int, message: str = "", code: str = "") -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    default = _ERRORS.get(status, ("Simulated failure.", "server_error", f"http_{status}"))
    return {"error": {"message": message or default[0], "type": default[1], "param": None,
                      "code": code or default[2]}}


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None,
                   close: bool = False) -> bytes:
    """A whole HTTP/1.1 response with a JSON body (``payload``: bytes or a JSON value)."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    head = {"Content-Type": "application/json", "Content-Length": str(len(body)),
            **(headers or {}), **({"Connection": "close"} if close else {})}
    lines = [f"HTTP/1.1 {status} {_PHRASES.get(status, 'Simulated')}",
             *(f"{k}: {v}" for k, v in head.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


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
    parser = argparse.ArgumentParser(prog="rill-simulator", description=__doc__.split("\n")[0])
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


class SimulatorProcess:
    """The simulator as a subprocess on a free loopback port, for tests and benchmarks.

    Starts ``python -m rill.simulator --port 0 *args`` and waits up to ``timeout`` s for
    its listening line (else ``RuntimeError`` with its stderr). A context manager; standard
    library only, so any test process can use it.
    """

    def __init__(self, *args: str, timeout: float = 10.0) -> None:
        root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rill.simulator", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=self._stderr, env={**os.environ, "PYTHONPATH": path})
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("rill-simulator listening on http://"):
            self._terminate()
            stderr = self.stderr
            self.stop()
            raise RuntimeError(f"rill-simulator did not start (got {line!r}):\n{stderr}")
        self.url = line.rsplit(" ", 1)[1]
        self.base_url = f"{self.url}/v1"

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stderr(self) -> str:
        """What the simulator wrote to stderr so far (tracebacks, warnings)."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def requests(self, tag: str | None = None) -> list[dict[str, Any]]:
        """The recorded chat requests (only those tagged ``tag`` if given), oldest first."""
        query = "" if tag is None else "?" + urllib.parse.urlencode({"tag": tag})
        with urllib.request.urlopen(f"{self.url}/_sim/requests{query}", timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def clear(self) -> None:
        """Forget every recorded request."""
        request = urllib.request.Request(f"{self.url}/_sim/requests", method="DELETE")
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def find(self, tag: str) -> dict[str, Any] | None:
        """The latest request tagged ``tag``, or ``None``."""
        matches = self.requests(tag)
        return matches[-1] if matches else None

    def wait_for(self, tag: str, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 5.0) -> dict[str, Any]:
        """Poll every 20 ms until the request tagged ``tag`` satisfies ``predicate``.

        Returns its record; raises ``AssertionError`` with the last one seen after
        ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        while True:
            record = self.find(tag)
            if record is not None and predicate(record):
                return record
            if time.monotonic() >= deadline:
                raise AssertionError(f"simulator request {tag!r} never matched; last: {record}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM, wait up to 5 s, then kill; close the pipes. Safe to call twice."""
        self._terminate()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def _terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


if __name__ == "__main__":
    main()
