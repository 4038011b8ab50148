"""The simulator's response side: HTTP/1.1 responses and chunked SSE bodies (RFC 9112)."""

from __future__ import annotations

import http
import socket
from typing import Any

import gevent
import orjson
from gevent.event import Event

FLUSH_BYTES = 64 * 1024
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
STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
               b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")


class ClientGone(Exception):
    """The client closed its connection."""


class Cut(Exception):
    """The simulator cuts the connection on purpose (``fault=cut``)."""


class Wire:
    """The response side of a connection while one chat request is served.

    Buffers HTTP chunks (sent before every wait, and every ``FLUSH_BYTES``) and watches the
    socket in a greenlet: EOF or a reset means the client left, and from then on every
    wait or write raises :class:`ClientGone`.
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
        """Write anything pending, then ``data``; raise :class:`ClientGone` if it left."""
        data, self._pending, self._size = b"".join([*self._pending, data]), [], 0
        if self.gone.is_set():
            raise ClientGone
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
            raise ClientGone

    def close(self) -> None:
        self._watcher.kill()  # before the keep-alive loop reads the socket again


def error_body(status: int, message: str = "", code: str = "") -> dict[str, Any]:
    """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    default = _ERRORS.get(status, ("Simulated failure.", "server_error", f"http_{status}"))
    return {"error": {"message": message or default[0], "type": default[1], "param": None,
                      "code": code or default[2]}}


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None,
                  close: bool = False) -> bytes:
    """A whole HTTP/1.1 response with a JSON body (``payload``: bytes or a JSON value)."""
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    head = {"Content-Type": "application/json", "Content-Length": str(len(body)),
            **(headers or {}), **({"Connection": "close"} if close else {})}
    lines = [f"HTTP/1.1 {status} {_PHRASES.get(status, 'Simulated')}",
             *(f"{k}: {v}" for k, v in head.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
