"""Rill's HTTP/1.1 upstream transport against scripted servers on 127.0.0.1 (real sockets)."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
import gevent.event
import gevent.ssl
import httpx2
import pytest

from rill import errors
from rill.chat_request import ChatRequest
from rill.config import DEFAULTS
from rill.upstreams import transport as transport_module
from rill.upstreams.http11 import ChunkedDecoder
from rill.upstreams.openai_compat import OpenAIUpstream
from rill.upstreams.transport import UpstreamTransport, proxy_mounts
from tests.integration.forward_proxy import running as forward_proxy_running
from tests.integration.forward_proxy import unset_proxy_variables
from tests.test_deploy import self_signed_cert

Handler = Callable[["Server", socket.socket, int], None]  # (server, connection, its index)


class Server:
    """Accepts connections on 127.0.0.1 and runs ``handler`` on each in a greenlet (the
    tests' sockets are gevent's)."""

    def __init__(self, handler: Handler, context: ssl.SSLContext | None = None) -> None:
        self.handler, self.context = handler, context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.active = 0  # connections whose handler has not returned
        self.requests: list[bytes] = []
        gevent.spawn(self._accept)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            index, self.connections = self.connections, self.connections + 1
            gevent.spawn(self._handle, sock, index)

    def _handle(self, sock: socket.socket, index: int) -> None:
        self.active += 1
        try:
            if self.context is not None:
                try:
                    sock = self.context.wrap_socket(sock, server_side=True)
                except OSError:
                    sock.close()
                    return
            self.handler(self, sock, index)
        finally:
            self.active -= 1

    def read_request(self, sock: socket.socket) -> bytes:
        """Read one request (head and Content-Length body); b"" if the client closed."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += sock.recv(65536)
        self.requests.append(head)
        return head

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/v1/chat"

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(handler: Handler, context: ssl.SSLContext | None = None) -> Server:
        servers.append(Server(handler, context))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def client(**timeouts: float) -> httpx2.Client:
    return httpx2.Client(transport=UpstreamTransport(client_context()),
                         timeout=httpx2.Timeout(5.0, **timeouts))


def client_context(cafile: str | None = None) -> ssl.SSLContext:
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        context.load_verify_locations(cafile)
    else:
        context.load_default_certs()
    return context


CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
           b"Transfer-Encoding: chunked\r\n\r\n")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def keep_alive(responses: Callable[[int], bytes]) -> Handler:
    """Answer each request on a connection with ``responses(request number)``."""
    def handle(server: Server, sock: socket.socket, index: int) -> None:
        with sock:
            n = 0
            while server.read_request(sock):
                sock.sendall(responses(n))
                n += 1
    return handle


def start_keep_alive(serve, responses: Callable[[int], bytes]) -> Server:
    return serve(keep_alive(responses))


# -- chunked framing --------------------------------------------------------------------------

BODY = (chunk(b"data: one\n\n") + b"5;ext=1\r\nhello\r\n" + chunk(b"x" * 300)
        + b"0\r\nTrailer: yes\r\n\r\n")


def test_chunked_decoder_gives_the_same_body_however_the_bytes_are_split() -> None:
    expected = b"data: one\n\nhello" + b"x" * 300
    for split in range(1, len(BODY)):
        decoder = ChunkedDecoder()
        got = decoder.feed(BODY[:split]) + decoder.feed(BODY[split:])
        assert (got, decoder.done, decoder.extra) == (expected, True, b""), split
    decoder = ChunkedDecoder()
    assert b"".join(decoder.feed(BODY[i:i + 1]) for i in range(len(BODY))) == expected
    assert decoder.done


@pytest.mark.parametrize("bad", [b"0x10\r\n", b"-1\r\n", b"zz\r\n", b"+5\r\n", b"1_0\r\n",
                                 b"\r\n", b"1" * 5000, b"2\r\nabc\r\n"])
def test_chunked_decoder_refuses_malformed_framing(bad: bytes) -> None:
    with pytest.raises(httpx2.RemoteProtocolError):
        ChunkedDecoder().feed(bad)


# -- over real sockets ------------------------------------------------------------------------

def test_a_chunked_stream_arrives_one_read_at_a_time_and_the_connection_is_reused(
        serve) -> None:
    """Chunks sent in one write come out as one piece (the relay then sends them as one
    event), and a fully read response leaves its connection for the next request."""
    events = b"".join(chunk(b"data: %d\n\n" % i) for i in range(3))
    server = start_keep_alive(serve, lambda n: CHUNKED + events + chunk(b"data: [DONE]\n\n")
                              + b"0\r\n\r\n")
    with client() as http:
        for _ in range(3):
            with http.stream("POST", server.url(), json={"a": 1}) as response:
                pieces = list(response.iter_raw())
            assert pieces == [b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: [DONE]\n\n"]
    assert server.connections == 1
    assert len(server.requests) == 3
    head = server.requests[0].decode()
    assert head.startswith("POST /v1/chat HTTP/1.1\r\n")
    assert "content-length: 7" in head.lower() and "host: 127.0.0.1" in head.lower()


def test_a_response_read_after_the_transport_closed_closes_its_connection(serve) -> None:
    eof = gevent.event.Event()

    def handle(server: Server, sock: socket.socket, index: int) -> None:
        with sock:
            server.read_request(sock)
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
            gevent.sleep(0.1)
            sock.sendall(b"ok")
            if not server.read_request(sock):
                eof.set()

    server = serve(handle)
    transport = UpstreamTransport(client_context())
    with httpx2.Client(transport=transport) as http, http.stream("GET", server.url()) as r:
        transport.close()
        assert r.read() == b"ok"
    assert eof.wait(2)


@pytest.mark.parametrize("framing", ["content-length", "close", "connection-close"])
def test_other_framings(serve, framing: str) -> None:
    body = b'{"ok": true}'
    if framing == "content-length":
        response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    else:
        header = b"Connection: close\r\n" if framing == "connection-close" else b""
        response = b"HTTP/1.1 200 OK\r\n" + header + b"\r\n" + body

    def handle(server: Server, sock: socket.socket, index: int) -> None:
        with sock:
            while server.read_request(sock):
                sock.sendall(response)
                if framing != "content-length":
                    return

    server = serve(handle)
    with client() as http:
        assert [http.get(server.url()).json() for _ in range(2)] == [{"ok": True}] * 2
    assert server.connections == (1 if framing == "content-length" else 2)


def test_a_host_name_is_resolved_and_an_address_connects_directly(serve) -> None:
    server = start_keep_alive(serve, lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    with client() as http:
        assert http.get(f"http://localhost:{server.port}/").text == "ok"
        assert http.get(server.url()).text == "ok"
    with client() as http, pytest.raises(httpx2.ConnectError):
        http.get("http://[::1]:1/")  # an IPv6 address, refused
    with client() as http, pytest.raises(httpx2.ConnectError):
        http.get("http://localhost:1/")  # each of its addresses refused


def test_interim_responses_are_skipped(serve) -> None:
    server = start_keep_alive(serve, lambda n: b"HTTP/1.1 100 Continue\r\n\r\n"
                              b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    with client() as http:
        response = http.post(server.url(), content=b"x")
    assert (response.status_code, response.text, response.reason_phrase) == (201, "ok",
                                                                              "Created")


def test_a_connection_the_server_closed_while_idle_is_not_reused(serve) -> None:
    def handle(server: Server, sock: socket.socket, index: int) -> None:
        with sock:
            server.read_request(sock)
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            # and closes: a keep-alive timeout on the server's side

    server = serve(handle)
    with client() as http:
        assert http.get(server.url()).text == "ok"
        _wait_until(lambda: server.connections == 1)
        gevent.sleep(0.1)
        assert http.get(server.url()).text == "ok"
    assert server.connections == 2


def test_a_reused_connection_closed_before_the_answer_is_retried_once(serve) -> None:
    """The keep-alive race: the server closes as the request is sent; a new connection
    carries it. On a new connection the same failure is an error (the SDK retries it)."""
    def handle(server: Server, sock: socket.socket, index: int) -> None:
        with sock:
            server.read_request(sock)
            if index == 0:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                server.read_request(sock)  # the second request: no answer
            elif index == 1:
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes")

    server = serve(handle)
    with client() as http:
        assert http.get(server.url()).text == "ok"
        assert http.get(server.url()).text == "yes"
        assert server.connections == 2
        with pytest.raises(httpx2.RemoteProtocolError, match="without sending a response"):
            http.get(server.url())


def test_a_body_cut_short_is_a_protocol_error_and_the_upstream_maps_it_to_cut(serve) -> None:
    def handle(server: Server, sock: socket.socket, index: int) -> None:
        with sock:
            server.read_request(sock)
            sock.sendall(CHUNKED + chunk(
                b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n') + b"40\r\nab")

    server = serve(handle)
    with (client() as http, http.stream("GET", server.url()) as response,
          pytest.raises(httpx2.RemoteProtocolError, match="complete response body")):
        list(response.iter_raw())
    up = OpenAIUpstream({**DEFAULTS, "RILL_UPSTREAM_MAX_RETRIES": 0})
    up.client = up.client.with_options(base_url=f"http://127.0.0.1:{server.port}/v1")
    stream = up.open(ChatRequest(messages=[{"role": "user", "content": "Hi"}], model="m"))
    events = []
    with pytest.raises(errors.UpstreamCut):
        for event in stream:
            events.append(event)
    stream.close()
    assert events == [("delta", {"content": "Hi"})]


def test_a_silent_server_is_a_read_timeout(serve) -> None:
    release = gevent.event.Event()

    def handle(server: Server, sock: socket.socket, index: int) -> None:
        with sock:
            server.read_request(sock)
            sock.sendall(CHUNKED)
            release.wait(5)

    server = serve(handle)
    with (client(read=0.3) as http, http.stream("GET", server.url()) as response,
          pytest.raises(httpx2.ReadTimeout)):
        list(response.iter_raw())
    release.set()


def test_without_body_timeout_a_body_read_outwaits_the_read_timeout(serve) -> None:
    """For a caller that ends stalled streams itself: the head still times out."""
    def handle(server: Server, sock: socket.socket, index: int) -> None:
        with sock:
            server.read_request(sock)
            sock.sendall(CHUNKED)
            gevent.sleep(0.6)
            sock.sendall(chunk(b"late") + b"0\r\n\r\n")

    server = serve(handle)
    transport = UpstreamTransport(client_context(), body_timeout=False)
    with (httpx2.Client(transport=transport, timeout=httpx2.Timeout(5.0, read=0.3)) as http,
          http.stream("GET", server.url()) as response):
        assert list(response.iter_raw()) == [b"late"]


def test_refused_and_malformed(serve) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with client() as http, pytest.raises(httpx2.ConnectError):
        http.get(f"http://127.0.0.1:{port}/")
    server = start_keep_alive(serve, lambda n: b"SPDY/9 200 OK\r\n\r\n")
    with client() as http, pytest.raises(httpx2.RemoteProtocolError, match="not HTTP"):
        http.get(server.url())


def test_tls_verifies_the_server_and_reuses_the_connection(serve, tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    # gevent's ssl, as a gevent worker's patched ssl module would give (sockets are gevent's)
    server_context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    server = serve(keep_alive(lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
                   server_context)
    with client() as http, pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY"):
        http.get(server.url("https"))
    trusting = client_context(cafile=str(cert))
    with httpx2.Client(transport=UpstreamTransport(trusting)) as http:
        assert [http.get(server.url("https")).text for _ in range(2)] == ["ok", "ok"]
    assert server.connections == 2  # the refused handshake, then one for both requests


def _wait_until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        gevent.sleep(0.01)


def test_connections_are_reused_when_their_descriptors_are_past_1024(serve) -> None:
    """A worker holding thousands of streams has descriptors past select()'s FD_SETSIZE;
    the idle check must still tell a live kept-alive connection from a closed one (it used
    select(), which refused them: every connection then looked closed, none was reused)."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 1200:
        pytest.skip("needs at least 1,200 open files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with socket.socket() as probe:  # what the client's connection will get
            assert probe.fileno() > 1024
        server = start_keep_alive(serve, lambda n: CHUNKED + chunk(b"data: x\n\n")
                                  + b"0\r\n\r\n")
        with client() as http:
            for _ in range(3):
                with http.stream("POST", server.url(), json={}) as response:
                    assert list(response.iter_raw()) == [b"data: x\n\n"]
        assert server.connections == 1
    finally:
        for fd in filler:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- every failure closes its socket ----------------------------------------------------------

def _until_closed(sock: socket.socket, seconds: float = 3.0) -> None:
    """The server's side of a failure: read until the client closes (or ``seconds`` pass)."""
    sock.settimeout(seconds)
    with contextlib.suppress(OSError):
        while sock.recv(65536):
            pass


def hostile(answer: bytes = b"", read: bool = True, pause: float = 0.0,
            hang_up: bool = False) -> Handler:
    """Read the request (unless not ``read``), wait ``pause`` s, send ``answer``, then
    close (``hang_up``) or wait for the client to."""
    def handle(server: Server, sock: socket.socket, index: int) -> None:
        with sock:
            if read:
                server.read_request(sock)
            gevent.sleep(pause)
            with contextlib.suppress(OSError):
                sock.sendall(answer)
            if not hang_up:
                _until_closed(sock)
    return handle


class RecordingContext(gevent.ssl.SSLContext):
    """Records every TLS socket it makes, so a test can check each one was closed."""

    made: list[ssl.SSLSocket]

    def wrap_socket(self, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        sock = super().wrap_socket(*args, **kwargs)
        self.made.append(sock)
        return sock


HOSTILE = {
    # name: (handler, scheme, client timeouts, a deadline of the caller's, error expected)
    "silent": (hostile(), "http", {"read": 0.1}, None, httpx2.ReadTimeout),
    "garbage head": (hostile(b"HELLO THERE\r\n\r\n"), "http", {}, None,
                     httpx2.RemoteProtocolError),
    "closes mid-head": (hostile(b"HTTP/1.1 200 OK\r\nContent-Ty", hang_up=True), "http", {},
                        None, httpx2.RemoteProtocolError),
    "1 MB head line": (hostile(b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 2**20), "http", {},
                       None, httpx2.RemoteProtocolError),
    "bad framing": (hostile(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), "http",
                    {}, None, httpx2.RemoteProtocolError),
    "never reads": (hostile(read=False, pause=0.3), "http", {"write": 0.1}, None,
                    httpx2.WriteTimeout),
    "caller's deadline": (hostile(), "http", {}, 0.1, gevent.Timeout),
    "silent handshake": (hostile(read=False), "https", {"connect": 0.1}, None,
                         httpx2.ConnectTimeout),
    "garbage handshake": (hostile(b"HELLO THERE\r\n\r\n", read=False), "https", {}, None,
                          httpx2.ConnectError),
    "deadline in the handshake": (hostile(read=False), "https", {}, 0.1, gevent.Timeout),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_every_failure_closes_its_socket(serve, monkeypatch, name: str) -> None:
    """Hostile servers: each failed request closes its socket at once (not whenever the
    garbage collector finds it), and the process holds no more descriptors after many."""
    handler, scheme, timeouts, deadline, expected = HOSTILE[name]
    server = serve(handler)
    made: list[socket.socket] = []
    connect = transport_module._connect

    def recording(*args: object) -> socket.socket:
        made.append(connect(*args))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(transport_module, "_connect", recording)
    context = RecordingContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_default_certs()
    context.made = []
    body = b"x" * (32 * 2**20) if name == "never reads" else b"{}"

    def fail() -> None:
        with (httpx2.Client(transport=UpstreamTransport(context),
                            timeout=httpx2.Timeout(5.0, **timeouts)) as http,
              pytest.raises(expected), gevent.Timeout(deadline)):
            http.post(server.url(scheme), content=body)

    for _ in range(6):
        fail()
    assert len(made) == 6
    assert [sock for sock in made + context.made if sock.fileno() != -1] == []
    _wait_until(lambda: server.active == 0)
    # counted by port, not in total: other tests' greenlets in this process open and close
    # descriptors of their own meanwhile
    assert _descriptors_on(server.port) == 1, "only the listener is left"


def _descriptors_on(port: int) -> int:
    """How many of this process's descriptors are TCP sockets with ``port`` at either end."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            with socket.socket(fileno=os.dup(int(name))) as sock:
                ends = [sock.getsockname()]
                with contextlib.suppress(OSError):
                    ends.append(sock.getpeername())
                count += any(isinstance(end, tuple) and end[1] == port for end in ends)
    return count


# -- proxies ----------------------------------------------------------------------------------

def test_https_proxy_tunnels_https_origins_and_leaves_the_others_direct(
        serve, monkeypatch, tmp_path: Path) -> None:
    """HTTPS_PROXY: https origins go through a CONNECT tunnel (TLS still verified end to end
    by the client); http origins are not proxied and keep the fast transport."""
    cert, key = self_signed_cert(tmp_path)
    server_context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    ok = keep_alive(lambda n: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    tls, plain = serve(ok, server_context), serve(ok)
    log = tmp_path / "proxy.log"
    unset_proxy_variables(monkeypatch)
    with forward_proxy_running(log) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        context = client_context(cafile=str(cert))
        with httpx2.Client(transport=UpstreamTransport(context),
                           mounts=proxy_mounts(context)) as http:
            https = http.get(tls.url("https"))
            direct = http.get(plain.url())
    assert (https.text, direct.text) == ("ok", "ok")
    assert "rill.body" not in https.extensions and "rill.body" in direct.extensions
    assert log.read_text().splitlines() == [f"CONNECT 127.0.0.1:{tls.port} HTTP/1.1"]


def test_proxy_mounts_follow_the_environment(monkeypatch) -> None:
    unset_proxy_variables(monkeypatch)
    context = client_context()
    assert proxy_mounts(context) == {}
    monkeypatch.setenv("all_proxy", "127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "localhost, .internal")
    mounts = proxy_mounts(context)
    assert sorted(mounts) == ["all://", "all://*.internal", "all://localhost"]
    assert isinstance(mounts["all://"], httpx2.HTTPTransport)
    assert mounts["all://localhost"] is None  # the client's own: UpstreamTransport
    monkeypatch.setenv("NO_PROXY", "*")
    assert proxy_mounts(context) == {}
