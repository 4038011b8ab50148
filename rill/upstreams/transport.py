"""The HTTP/1.1 transport under the SDK: keep-alive connections, and a body read per recv.

The ``openai`` SDK builds each request, authenticates, retries and maps errors; ``httpx2``
hands the finished request to this transport, which sends it on a kept-alive connection to
the origin and returns the response with its body still on the socket. The body is read
with one ``recv`` per wake-up and its framing removed by :mod:`~rill.upstreams.http11`
(RFC 9112), so the relay gets everything the upstream sent since the last read as one
``bytes``: under load several upstream events arrive together and are relayed as one.
httpcore and h11 instead hand over one HTTP chunk at a time through several layers each,
which cost about a quarter of a loaded worker (``bench/PROFILE.md``).

Only what an OpenAI-compatible upstream needs: HTTP/1.1 over TCP or TLS, ``Content-Length``,
``chunked`` and close-delimited bodies; no HTTP/2, no content decoding (``httpx2`` does that
above), no proxies: :func:`proxy_mounts` routes the origins that the environment's
``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` send through a proxy to
``httpx2``'s own transport, as ``httpx2`` does when it builds its transport itself. Failures raise
``httpx2``'s exceptions, so the SDK retries and maps them as it does for its own transport:
``ConnectError``/``ConnectTimeout``, ``WriteError``/``WriteTimeout``,
``ReadError``/``ReadTimeout`` and ``RemoteProtocolError``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import select
import socket
import ssl
import time
from typing import Any

import httpx2
from gevent import monkey
from httpx2._utils import get_environment_proxies

from .http11 import Body, Origin, parse_head

__all__ = ["BODY_EXTENSION", "Body", "Connection", "UpstreamTransport", "proxy_mounts"]

READ_BYTES = 65536
MAX_HEAD_BYTES = 65536  # status line and headers of a response
KEEPALIVE_SECONDS = 25.0  # below the 30-65 s idle timeouts of common servers and proxies

BODY_EXTENSION = "rill.body"  # the response's Body, for reads that do not wait
# poll, not select: select() refuses a descriptor past FD_SETSIZE (1,024), and a worker
# holding thousands of streams has such descriptors (each idle connection then looked closed).
_poll = monkey.get_original("select", "poll")


class UpstreamTransport(httpx2.BaseTransport):
    """Send requests over kept-alive HTTP/1.1 connections, one idle list per origin.

    ``ssl_context`` verifies ``https`` origins; connections idle longer than ``keepalive``
    seconds, or that the server closed, are not reused; at most ``max_idle`` are kept per
    origin. Timeouts come from each request (``httpx2.Timeout``: connect, write, read),
    except that with ``body_timeout`` False a body read waits as long as it takes: for a
    caller that ends stalled streams itself (Rill's producer does, under gevent), which
    saves a timer per read.
    """

    def __init__(self, ssl_context: ssl.SSLContext, keepalive: float = KEEPALIVE_SECONDS,
                 max_idle: int = 1024, body_timeout: bool = True) -> None:
        self._ssl = ssl_context
        self._body_timeout = body_timeout
        self._keepalive = keepalive
        self._max_idle = max_idle
        self._idle: dict[Origin, list[tuple[float, Connection]]] = {}
        self._closed = False

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx2.UnsupportedProtocol(f"Unsupported URL scheme {url.scheme!r}")
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts = request.extensions.get("timeout") or {}
        message = _head(request) + request.read()
        while True:
            connection, reused = self._checkout(origin, timeouts.get("connect"))
            try:
                connection.send(message, timeouts.get("write"))
                status, reason, headers = connection.read_head(timeouts.get("read"))
                body = Body(self, origin, connection, request.method, status, headers,
                            timeouts.get("read") if self._body_timeout else None)
                break
            except (httpx2.ReadError, httpx2.WriteError, httpx2.RemoteProtocolError):
                connection.close()
                # A kept-alive connection the server closed just as it was reused: the
                # request was not answered, so it goes once more on a new connection.
                if not (reused and connection.received == 0):
                    raise
            except BaseException:  # a timeout, or the caller's (gevent.Timeout, a kill)
                connection.close()
                raise
        return httpx2.Response(status, headers=headers, stream=body, extensions={
            "http_version": b"HTTP/1.1", "reason_phrase": reason, BODY_EXTENSION: body})

    def _checkout(self, origin: Origin, timeout: float | None) -> tuple[Connection, bool]:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            try:
                since, connection = idle.pop()
            except IndexError:  # another thread (a worker without gevent) took the last
                break
            if now - since < self._keepalive and not connection.readable():
                return connection, True
            connection.close()  # expired, or the server closed it (or sent something)
        return Connection.open(origin, self._ssl, timeout), False

    def release(self, origin: Origin, connection: Connection) -> None:
        """Keep ``connection`` for the next request to ``origin`` (its response was read)."""
        idle = self._idle.setdefault(origin, [])
        if self._closed or len(idle) >= self._max_idle:
            connection.close()
        else:
            idle.append((time.monotonic(), connection))

    def close(self) -> None:
        """Close the idle connections; one released later (its body still being read) is
        closed then."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for _, connection in connections:
                connection.close()


def proxy_mounts(ssl_context: ssl.SSLContext) -> dict[str, httpx2.BaseTransport | None]:
    """The environment's proxies as ``httpx2.Client(mounts=...)``: ``{URL pattern: transport}``.

    Reads ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and ``NO_PROXY`` (either case) as
    ``httpx2`` does for its own transport (``urllib.request.getproxies``; NO_PROXY's names,
    addresses and ``*`` as curl reads them). A proxied pattern gets ``httpx2``'s
    ``HTTPTransport`` through that proxy (absolute-URI requests for ``http``, a ``CONNECT``
    tunnel for ``https``; ``socks5://`` needs the ``socksio`` package); a NO_PROXY pattern
    gets ``None``, the client's own transport. Empty when no proxy is set: every origin then
    goes through :class:`UpstreamTransport`. Without this the client, given a transport,
    ignores the variables.
    """
    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=1024,
                           keepalive_expiry=KEEPALIVE_SECONDS)
    return {pattern: None if url is None else
            httpx2.HTTPTransport(proxy=url, verify=ssl_context, limits=limits)
            for pattern, url in get_environment_proxies().items()}


def _head(request: httpx2.Request) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path)]
    lines.extend(b"%s: %s" % pair for pair in request.headers.raw)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _connect(host: str, port: int, timeout: float | None) -> socket.socket:
    """A TCP connection to the first of ``host``'s addresses that accepts; an IP address
    skips the resolver (gevent's runs each lookup in a thread of its pool, even for
    ``127.0.0.1``). Raises ``OSError`` (``TimeoutError`` when ``timeout`` s pass)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        addresses: list[tuple[socket.AddressFamily, Any]] = [(family, (host, port))]
    except ValueError:
        addresses = [(info[0], info[4]) for info in
                     socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]
    error: OSError = OSError(f"{host} has no address")
    for family, address in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:  # the caller's deadline (gevent.Timeout), a kill
            sock.close()
            raise
    raise error


class Connection:
    """One TCP (or TLS) connection; ``received`` counts the bytes read since the last send."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._pending = getattr(sock, "pending", None)  # TLS: decrypted bytes not yet read
        self.buffer = b""  # read past the head: the start of the body
        self.received = 0
        self.http10 = False  # the last response was HTTP/1.0: not kept alive
        self._timeout: float | None = -1.0

    @classmethod
    def open(cls, origin: Origin, context: ssl.SSLContext, timeout: float | None) -> Connection:
        scheme, host, port = origin
        tcp = sock = None
        try:
            tcp = sock = _connect(host, port, timeout)
            tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = context.wrap_socket(tcp, server_hostname=host,
                                           do_handshake_on_connect=False)
                sock.do_handshake()
            return cls(sock)
        except BaseException as exc:
            for each in (sock, tcp):  # the TLS socket took over the TCP one's descriptor
                if each is not None:
                    each.close()
            if isinstance(exc, TimeoutError):
                raise httpx2.ConnectTimeout(str(exc)) from exc
            if isinstance(exc, OSError):  # ssl.SSLError included: a failed handshake
                raise httpx2.ConnectError(str(exc)) from exc
            raise

    def _set_timeout(self, timeout: float | None) -> None:
        if timeout != self._timeout:
            self.sock.settimeout(timeout)
            self._timeout = timeout

    def send(self, data: bytes, timeout: float | None) -> None:
        self.received = 0
        self._set_timeout(timeout)
        try:
            self.sock.sendall(data)
        except TimeoutError as exc:
            raise httpx2.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpx2.WriteError(str(exc)) from exc

    def recv(self, timeout: float | None) -> bytes:
        """Return what arrived (up to ``READ_BYTES``), waiting up to ``timeout`` s;
        ``b""`` when the server closed the connection."""
        self._set_timeout(timeout)
        try:
            data = self.sock.recv(READ_BYTES)
        except TimeoutError as exc:
            raise httpx2.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpx2.ReadError(str(exc)) from exc
        self.received += len(data)
        return data

    def recv_nowait(self) -> bytes | None:
        """Return what has arrived without waiting: ``None`` if nothing, ``b""`` when the
        server closed the connection. With TLS, every record already decrypted is taken."""
        self._set_timeout(0.0)
        try:
            data = self.sock.recv(READ_BYTES)
            pending = self._pending
            while data and pending is not None and pending():
                data += self.sock.recv(READ_BYTES)
        except (BlockingIOError, ssl.SSLWantReadError):
            return None
        except OSError as exc:
            raise httpx2.ReadError(str(exc)) from exc
        self.received += len(data)
        return data

    def read_head(self, timeout: float | None) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        """Read a response's status line and headers (skipping ``1xx`` interim responses).

        Returns ``(status, reason, headers)``; the bytes after the head stay in ``buffer``.
        """
        data = self.buffer
        while True:
            end = data.find(b"\r\n\r\n")
            while end < 0:
                if len(data) > MAX_HEAD_BYTES:
                    raise httpx2.RemoteProtocolError("The response head is too large.")
                chunk = self.recv(timeout)
                if not chunk:
                    raise httpx2.RemoteProtocolError(
                        "Server disconnected without sending a response.")
                data += chunk
                end = data.find(b"\r\n\r\n")
            head, data = data[:end], data[end + 4:]
            status, reason, headers = parse_head(head)
            self.http10 = head.startswith(b"HTTP/1.0")
            if not 100 <= status < 200:
                self.buffer = data
                return status, reason, headers

    def readable(self) -> bool:
        """True if the idle connection has something to read: the server closed it."""
        pending = self._pending
        if pending is not None and pending():
            return True
        try:
            poller = _poll()
            poller.register(self.sock.fileno(), select.POLLIN)
            return bool(poller.poll(0))
        except (OSError, ValueError):
            return True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
