"""The evented producer: a generation run by libev watchers, with no greenlet of its own.

What every producer must do is in tests/test_producers.py; here is what is the evented one's
own: merging reads, the connection's reuse, a closed socket, TLS, and when it is chosen.

Real sockets on 127.0.0.1: a scripted OpenAI-compatible server (greenlets, as the tests'
sockets are gevent's), Rill's transport and upstream, the memory hub.
"""

from __future__ import annotations

import secrets
import socket
import ssl
from collections.abc import Callable, Iterator

import gevent
import gevent.event
import gevent.ssl
import orjson
import pytest
from flask import Flask

from rill import steps
from rill.chat_request import ChatRequest
from rill.config import DEFAULTS
from rill.generation import Generation, Limits
from rill.hub import Hub
from rill.hub.memory import MemoryHub
from rill.producers import EventedProducer, Producer, TaskProducer, create
from rill.relay import subscribe
from rill.tools import ToolRegistry
from rill.upstreams.openai_compat import OpenAIUpstream
from rill.upstreams.transport import UpstreamTransport
from tests.sse_client import Event, events_only, parse, text_of
from tests.test_deploy import self_signed_cert
from tests.test_transport import CHUNKED, Server, chunk, client_context

REQUEST = ChatRequest(messages=[{"role": "user", "content": "Hi"}], model="m")
LIMITS = Limits(stall_timeout=60, max_seconds=60, orphan_grace=60)


def sse(data: dict | str) -> bytes:
    text = data if isinstance(data, str) else orjson.dumps(data).decode()
    return chunk(f"data: {text}\n\n".encode())


def token(text: str) -> bytes:
    return sse({"choices": [{"index": 0, "delta": {"content": text}}]})


END = sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + sse("[DONE]")
TERMINATOR = b"0\r\n\r\n"


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[socket.socket, int], None]], Server]]:
    servers: list[Server] = []

    def start_server(script: Callable[[socket.socket, int], None]) -> Server:
        def handle(server: Server, sock: socket.socket, index: int) -> None:
            with sock:
                while server.read_request(sock):
                    script(sock, index)

        servers.append(Server(handle))
        return servers[-1]

    yield start_server
    for server in servers:
        server.close()


UPSTREAMS: list[OpenAIUpstream] = []


@pytest.fixture(autouse=True)
def close_upstreams() -> Iterator[None]:
    yield
    while UPSTREAMS:
        UPSTREAMS.pop().client.close()  # and with it the transport's kept-alive connections


def upstream_for(server: Server) -> OpenAIUpstream:
    up = OpenAIUpstream({**DEFAULTS, "RILL_UPSTREAM_MAX_RETRIES": 0})
    up.client = up.client.with_options(base_url=f"http://127.0.0.1:{server.port}/v1")
    UPSTREAMS.append(up)
    return up


class Run:
    """One generation into a hub (a fresh memory hub unless given), driven by the producer
    ``create`` picks (or by ``driver``), and what its finish callback saw; with ``tools``
    (server-side, run in ``app``), in model steps (:mod:`rill.steps`)."""

    def __init__(self, server: Server, limits: Limits = LIMITS,
                 up: OpenAIUpstream | None = None, hub: Hub | None = None,
                 driver: type[Producer] | None = None, tools: ToolRegistry | None = None,
                 app: Flask | None = None) -> None:
        self.hub = hub or MemoryHub(DEFAULTS)
        self.stream_id = secrets.token_urlsafe(16)
        self.hub.open(self.stream_id, None)
        self.finished = 0
        up = up or upstream_for(server)
        request, tool_steps = REQUEST, None
        if tools is not None and app is not None:
            request, tool_steps = steps.plan(REQUEST, tools, up, None, app)
        generation = Generation(self.hub, self.stream_id,
                                {"stream_id": self.stream_id, "model": "m"}, limits,
                                on_finish=self._finish, steps=tool_steps)
        upstream = up.open(request)
        self.producer: Producer = (create(generation, upstream) if driver is None
                                   else driver(generation, upstream))
        self.hub.on_signal(lambda s: self.producer.signal() if s == self.stream_id else None)
        self.producer.start()

    def _finish(self) -> None:
        self.finished += 1

    def events(self) -> list[Event]:
        body = subscribe(self.hub, self.stream_id, -1, secrets.token_hex(4), heartbeat=0.3,
                         lease=5, batch=1000)
        return events_only(parse(body))


def test_a_generation_runs_evented_merges_what_arrived_together_and_reuses_the_connection(
        serve) -> None:
    def script(sock: socket.socket, index: int) -> None:
        sock.sendall(CHUNKED + token("Hel") + token("lo"))  # one write: one event
        gevent.sleep(0.05)
        sock.sendall(token(" there") + END)
        gevent.sleep(0.05)
        sock.sendall(TERMINATOR)  # after [DONE]: read for the connection's reuse

    server = serve(script)
    up = upstream_for(server)
    run = Run(server, up=up)
    assert isinstance(run.producer, EventedProducer)
    events = run.events()
    assert [(e.event, e.data) for e in events] == [
        ("start", f'{{"stream_id":"{run.stream_id}","model":"m"}}'),
        ("delta", '{"content":"Hello"}'), ("delta", '{"content":" there"}'),
        ("done", '{"finish_reason":"stop","usage":null}')]
    gevent.sleep(0.2)
    assert run.finished == 1
    second = Run(server, up=up)
    assert text_of(second.events()) == "Hello there"
    assert server.connections == 1


def test_a_server_that_closes_after_done_without_the_terminator_is_let_go_at_once(
        serve) -> None:
    """The closed socket stays readable: waiting out the drain for the chunked terminator
    would spin on it."""
    def script(sock: socket.socket, index: int) -> None:
        sock.sendall(CHUNKED + token("ok") + END)
        sock.close()

    run = Run(serve(script))
    reads = 0
    read_nowait = run.producer._stream.read_nowait

    def counting() -> list | None:
        nonlocal reads
        reads += 1
        return read_nowait()

    run.producer._stream.read_nowait = counting  # type: ignore[method-assign]
    assert text_of(run.events()) == "ok"
    gevent.sleep(0.3)
    assert run.producer._io is None
    assert reads < 10


def test_a_tls_upstream_runs_evented_too(tmp_path) -> None:
    """Over TLS a readable socket may hold part of a record (nothing to read yet) or
    several records: 200 tokens in one write and then one by one come out whole."""
    cert, key = self_signed_cert(tmp_path)
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    words = [f"w{i} " for i in range(200)]

    def script(server: Server, sock: socket.socket, index: int) -> None:
        with sock:
            server.read_request(sock)
            sock.sendall(CHUNKED + b"".join(token(w) for w in words[:100]))
            gevent.sleep(0.02)
            for word in words[100:]:
                sock.sendall(token(word))
            sock.sendall(END + TERMINATOR)
            gevent.sleep(0.5)

    server = Server(script, context)
    transport = UpstreamTransport(client_context(cafile=str(cert)), body_timeout=False)
    up = OpenAIUpstream({**DEFAULTS, "RILL_UPSTREAM_MAX_RETRIES": 0}, transport=transport)
    up.client = up.client.with_options(base_url=f"https://127.0.0.1:{server.port}/v1")
    UPSTREAMS.append(up)
    try:
        run = Run(server, up=up)
        assert isinstance(run.producer, EventedProducer)
        events = run.events()
    finally:
        server.close()
    assert text_of(events) == "".join(words)
    assert events[-1].json["finish_reason"] == "stop"


def test_an_upstream_that_cannot_be_read_without_waiting_runs_in_greenlets() -> None:
    from tests.conftest import FakeStream, FakeUpstream

    hub = MemoryHub(DEFAULTS)
    hub.open("s", None)
    producer = create(Generation(hub, "s", {}, LIMITS), FakeStream(FakeUpstream(), [], "m"))
    assert type(producer) is TaskProducer
