"""An OpenAI-compatible upstream simulator, for tests, benchmarks and trying Rill keyless.

``POST /v1/chat/completions`` streams (or returns) chat completions the way OpenAI's API
reference describes them, and replays the shapes other providers send. Behaviour is chosen
per request by the model name, as a query string, so concurrent callers never interfere::

    sim?tokens=50&ttft_ms=300&itl_ms=20&fault=cut&after=5&shape=reasoning&tag=abc

``GET /_sim/requests`` lists every chat request with its outcome (``running``,
``completed``, ``client_closed``, ``fault``); ``DELETE`` clears the list. The simulator
watches each client socket while it streams, so it sees a client leave even while silent.

It is a gevent ``StreamServer`` with a small HTTP/1.1 layer of its own (keep-alive, chunked
bodies): that gives exact control over cuts and stalls, and holds thousands of streams.
Run it with ``rill-simulator`` or ``python -m rill.simulator``; tests use
:class:`SimulatorProcess`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any, BinaryIO
from urllib.parse import parse_qsl

import gevent
from gevent.server import StreamServer

BIG_EVENT_BYTES = 150 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
_WORD = re.compile(r"\S+\s*|\s+")


def expected_text(tokens: int) -> str:
    """The reply text of ``sim?tokens=N``: ``"tok0 tok1 … tok{N-1} "``."""
    return "".join(f"tok{i} " for i in range(tokens))


def parse_params(model: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """Read scenario parameters from ``model`` (``name?k=v&…``) over ``defaults``."""
    _, _, query = model.partition("?")
    params = dict(defaults)
    params.update(parse_qsl(query, keep_blank_values=True))
    for key in ("tokens", "ttft_ms", "itl_ms", "after", "status", "fail_first",
                "reasoning_tokens", "retry_after"):
        if key in params:
            params[key] = int(params[key])
    return params


class _ClientGone(Exception):
    """The client closed its connection."""


class Simulator:
    """Serves connections; keeps a record of every chat request."""

    def __init__(self, ttft_ms: int = 0, itl_ms: int = 0, tokens: int = 20) -> None:
        self.defaults = {"tokens": tokens, "ttft_ms": ttft_ms, "itl_ms": itl_ms}
        self.records: list[dict[str, Any]] = []
        self.failures: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._conns = itertools.count(1)

    def handle(self, sock: socket.socket, address: Any) -> None:
        """Serve one connection: requests in turn while it is kept alive."""
        conn = next(self._conns)
        rfile = sock.makefile("rb")
        try:
            while True:
                request = _read_request(rfile)
                if request is None or not self._dispatch(sock, conn, *request):
                    break
        except (OSError, ValueError):
            pass
        finally:
            rfile.close()
            sock.close()

    def _dispatch(self, sock: socket.socket, conn: int, method: str, path: str,
                  headers: dict[str, str], body: bytes) -> bool:
        keep = headers.get("connection", "").lower() != "close"
        if method == "POST" and path == "/v1/chat/completions":
            return self._chat(sock, conn, headers, body) and keep
        if method == "GET" and path == "/_sim/requests":
            _send_json(sock, 200, self.records)
        elif method == "DELETE" and path == "/_sim/requests":
            self.records.clear()
            _send_json(sock, 200, {"cleared": True})
        elif method == "GET" and path == "/v1/models":
            _send_json(sock, 200, {"object": "list", "data": [
                {"id": "sim", "object": "model", "created": 0, "owned_by": "rill"}]})
        else:
            _send_json(sock, 404, _error_body(f"No route for {method} {path}", "not_found"))
        return keep

    def _chat(self, sock: socket.socket, conn: int, headers: dict[str, str],
              raw: bytes) -> bool:
        try:
            body = json.loads(raw)
            params = parse_params(str(body.get("model", "sim")), self.defaults)
        except (ValueError, AttributeError):
            _send_json(sock, 400, _error_body("Invalid request body", "invalid_request"))
            return True
        record = {"id": next(self._ids), "model": body.get("model"), "params": params,
                  "body": body, "headers": headers, "conn": conn, "started": time.time(),
                  "ended": None, "outcome": "running", "tokens_sent": 0}
        self.records.append(record)
        watcher = gevent.spawn(_watch, sock, gevent.getcurrent())
        try:
            keep = self._respond(sock, params, body, record)
            if record["outcome"] == "running":
                record["outcome"] = "completed"
            return keep
        except (_ClientGone, OSError):
            record["outcome"] = "client_closed"
            return False
        finally:
            watcher.kill(block=True)
            record["ended"] = time.time()

    def _respond(self, sock: socket.socket, params: dict[str, Any], body: dict[str, Any],
                 record: dict[str, Any]) -> bool:
        fault = params.get("fault")
        if fault == "status" and self._should_fail(params):
            record["outcome"] = "fault"
            status = params.get("status", 500)
            extra = {"Retry-After": str(params.get("retry_after", 1))} if status == 429 else {}
            _send_json(sock, status, _error_body("simulated failure", f"http_{status}"), extra)
            return True
        if fault == "hang":
            gevent.sleep(3600)
        if not body.get("stream"):
            _send_json(sock, 200, _completion(params, body))
            return True
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer = _ChunkWriter(sock, params.get("shape") == "multiline")
        complete = _stream(writer, params, body, record)
        if not complete:
            record["outcome"] = "fault"
            return False
        sock.sendall(b"0\r\n\r\n")
        return True

    def _should_fail(self, params: dict[str, Any]) -> bool:
        if "fail_first" not in params:
            return True
        tag = str(params.get("tag", ""))
        self.failures[tag] += 1
        return self.failures[tag] <= params["fail_first"]


def _watch(sock: socket.socket, handler: gevent.Greenlet) -> None:
    """Raise :class:`_ClientGone` in ``handler`` when the client closes ``sock``."""
    try:
        data = sock.recv(1, socket.MSG_PEEK)
    except OSError:
        data = b""
    if not data:
        handler.kill(_ClientGone(), block=False)


class _ChunkWriter:
    """Writes SSE events as HTTP chunks; ``multiline`` splits data lines and uses CRLF."""

    def __init__(self, sock: socket.socket, multiline: bool) -> None:
        self.sock = sock
        self.multiline = multiline

    def raw(self, data: bytes) -> None:
        self.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))

    def event(self, payload: dict[str, Any] | str) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload,
                                                                   separators=(",", ":"))
        if self.multiline and data.startswith("{"):
            head, sep, tail = data.partition(',"')
            text = f"data: {head},\r\ndata: \"{tail}\r\n\r\n" if sep else f"data: {data}\r\n\r\n"
        else:
            text = f"data: {data}\n\n"
        self.raw(text.encode())


def _stream(out: _ChunkWriter, params: dict[str, Any], body: dict[str, Any],
            record: dict[str, Any]) -> bool:
    """Write one streamed completion; return False if it was cut on purpose."""
    shape, fault = params.get("shape", ""), params.get("fault")
    chunk = _chunk_factory(params, shape)
    tokens = _reply_tokens(params)
    max_tokens = body.get("max_tokens")
    finish = "stop"
    if isinstance(max_tokens, int) and len(tokens) > max_tokens:
        tokens, finish = tokens[:max_tokens], "length"
    if shape == "big_event":
        tokens = ["x" * BIG_EVENT_BYTES, *tokens]
    reasoning = [f"think{i} " for i in range(params.get("reasoning_tokens", 5))] \
        if shape in ("reasoning", "reasoning_content") else []
    if shape == "azure_filter":
        out.event({"id": "", "object": "", "created": 0, "model": "", "choices": [],
                   "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]})
    pace = _pacer(params)
    pace()
    out.event(chunk({"role": "assistant", "content": None if reasoning else ""}))
    key = "reasoning_content" if shape == "reasoning_content" else "reasoning"
    for text in reasoning:
        out.event(chunk({key: text, "content": None}))
        pace()
    after = params.get("after", 2 if shape in ("error_in_stream", "malformed") else None)
    for i, text in enumerate(tokens):
        if after is not None and i == after:
            if fault == "cut":
                return False
            if fault == "stall":
                gevent.sleep(3600)
            if shape == "error_in_stream":
                out.event({"error": {"message": "simulated failure", "type": "server_error",
                                     "code": "internal_error"}})
                return True
            if shape == "malformed":
                out.raw(b"data: {not json\n\n")
        if i:
            pace()
        _content_event(out, chunk, shape, text)
        record["tokens_sent"] += 1
    _finish(out, chunk, params, body, shape, finish, len(tokens))
    return True


def _content_event(out: _ChunkWriter, chunk: Callable[..., dict[str, Any]], shape: str,
                   text: str) -> None:
    if shape == "null_content":
        out.event(chunk({"content": None}))
        out.event(chunk({"content": ""}))
    out.event(chunk({"content": text}))
    if shape == "azure_filter":
        no_delta = chunk({})
        del no_delta["choices"][0]["delta"]
        no_delta["choices"][0]["content_filter_results"] = {"hate": {"filtered": False}}
        out.event(no_delta)
    if shape == "comments":
        out.raw(b": keep-alive\n\n")


def _finish(out: _ChunkWriter, chunk: Callable[..., dict[str, Any]], params: dict[str, Any],
            body: dict[str, Any], shape: str, finish: str, completion_tokens: int) -> None:
    usage = {"prompt_tokens": _prompt_tokens(body), "completion_tokens": completion_tokens}
    usage["total_tokens"] = usage["prompt_tokens"] + completion_tokens
    if shape != "finish_null":
        last = chunk({}, "abort" if shape == "finish_abort" else finish)
        if shape == "llamacpp":
            last["timings"] = {"prompt_n": usage["prompt_tokens"],
                               "predicted_n": completion_tokens, "predicted_per_second": 50.0}
        out.event(last)
    wants_usage = (body.get("stream_options") or {}).get("include_usage")
    if wants_usage or shape in ("usage_chunk", "llamacpp"):
        usage_chunk = chunk({})
        usage_chunk["choices"] = []
        usage_chunk["usage"] = usage
        out.event(usage_chunk)
    if shape not in ("no_done",):
        out.event("[DONE]")


def _chunk_factory(params: dict[str, Any], shape: str) -> Callable[..., dict[str, Any]]:
    ident = f"chatcmpl-sim-{int(time.time() * 1000)}"
    model = params.get("name", "sim")

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": ident, "object": "chat.completion.chunk", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        if shape == "llamacpp":
            data["system_fingerprint"] = "b4000-sim"
        return data

    return chunk


def _pacer(params: dict[str, Any]) -> Callable[[], None]:
    """Return a function to call before each token: TTFT first, then ITL."""
    ttft, itl = params.get("ttft_ms", 0) / 1000, params.get("itl_ms", 0) / 1000
    count = itertools.count()

    def pace() -> None:
        n = next(count)
        if n == 0:
            gevent.sleep(ttft)
        elif itl:
            gevent.sleep(itl)
        elif n % 64 == 0:
            gevent.sleep(0)  # never starve the other streams

    return pace


def _reply_tokens(params: dict[str, Any]) -> list[str]:
    if "text" in params:
        return _WORD.findall(str(params["text"]))
    return [f"tok{i} " for i in range(params.get("tokens", 20))]


def _prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages") or []
    return sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))


def _completion(params: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    text = "".join(_reply_tokens(params))
    prompt = _prompt_tokens(body)
    completion = len(_reply_tokens(params))
    return {"id": "chatcmpl-sim", "object": "chat.completion", "created": int(time.time()),
            "model": "sim", "choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}


def _error_body(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "simulated", "code": code}}


def _read_request(rfile: BinaryIO) -> tuple[str, str, dict[str, str], bytes] | None:
    """Read one HTTP/1.1 request; None at a clean end of the connection."""
    line = rfile.readline(65536)
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while True:
        header = rfile.readline(65536)
        if header in (b"\r\n", b"\n", b""):
            break
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if length > MAX_BODY_BYTES:
        raise ValueError("body too large")
    body = rfile.read(length) if length else b""
    return method, target.split("?", 1)[0], headers, body


def _send_json(sock: socket.socket, status: int, payload: Any,
               headers: dict[str, str] | None = None) -> None:
    body = json.dumps(payload).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (f"HTTP/1.1 {status} SIM\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n")
    sock.sendall(head.encode() + body)


def main(argv: list[str] | None = None) -> None:
    """Run the simulator until SIGTERM or SIGINT."""
    from gevent import monkey

    monkey.patch_all()
    parser = argparse.ArgumentParser(prog="rill-simulator", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001, help="0 picks a free port")
    parser.add_argument("--ttft-ms", type=int, default=0, help="default time to first token")
    parser.add_argument("--itl-ms", type=int, default=0, help="default inter-token latency")
    parser.add_argument("--tokens", type=int, default=20, help="default reply length")
    parser.add_argument("--backlog", type=int, default=2048)
    args = parser.parse_args(argv)
    simulator = Simulator(args.ttft_ms, args.itl_ms, args.tokens)
    server = StreamServer((args.host, args.port), simulator.handle, backlog=args.backlog)
    server.start()
    host, port = server.address[:2]
    print(f"rill-simulator listening on http://{host}:{port}", flush=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.stop)
    server.serve_forever()


class SimulatorProcess:
    """The simulator as a subprocess on a free loopback port, for tests and benchmarks."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rill.simulator", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 10)
        line = self.process.stdout.readline() if ready else ""
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"rill-simulator failed to start: {self.process.stderr.read()}")
        self.url = line.rsplit(" ", 1)[1].strip()
        self.base_url = f"{self.url}/v1"

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def requests(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/_sim/requests", timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def clear(self) -> None:
        request = urllib.request.Request(f"{self.url}/_sim/requests", method="DELETE")
        with urllib.request.urlopen(request, timeout=5):
            pass

    def find(self, tag: str) -> dict[str, Any] | None:
        matches = [r for r in self.requests() if r["params"].get("tag") == tag]
        return matches[-1] if matches else None

    def wait_for(self, tag: str, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 5.0) -> dict[str, Any]:
        """Poll until the request tagged ``tag`` satisfies ``predicate``; return it."""
        deadline = time.monotonic() + timeout
        record = None
        while time.monotonic() < deadline:
            record = self.find(tag)
            if record is not None and predicate(record):
                return record
            time.sleep(0.02)
        raise AssertionError(f"simulator request {tag!r} never matched; last: {record}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


if __name__ == "__main__":
    main()
