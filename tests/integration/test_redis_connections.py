"""A worker's Redis connections stay bounded however many streams start at once (issue 12).

A real gunicorn gevent worker with the Redis hub and per-client stream caps on, and its own
redis-server (other test files share theirs), takes a burst of streams started together;
redis-server's ``connected_clients`` is sampled the whole time. (flask-limiter's Redis
storage, when rate limits are on, opens a connection per concurrent check on top: README,
Sizing.)
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
import time

import pytest
import redis

from rill.hub.redis_io import POOL_SIZE
from tests.conftest import RedisServer
from tests.integration.conftest import ask, relay_env, run_rill, sim_model

pytestmark = pytest.mark.integration

STREAMS = 300
# The shared request pool; the flusher's, the listener's and the heartbeat's connections,
# each with one spare.
BUDGET = POOL_SIZE + 6


def _burst(port: int, body: bytes, count: int, timeout: float = 60.0) -> list[bytes]:
    """Send ``count`` POSTs at once on their own connections; return each whole response."""
    head = (f"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    selector = selectors.DefaultSelector()
    answers: dict[socket.socket, bytearray] = {}
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(head + body)
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        answers[sock] = bytearray()
    deadline = time.monotonic() + timeout
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1):
            sock = key.fileobj
            chunk = sock.recv(65536)  # type: ignore[union-attr]
            if chunk:
                answers[sock].extend(chunk)  # type: ignore[index]
            else:
                selector.unregister(sock)
                sock.close()  # type: ignore[union-attr]
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    return [bytes(a) for a in answers.values()]


def test_a_burst_of_streams_uses_a_bounded_number_of_redis_connections(simulator) -> None:
    """The hub's request work and the stream caps share one pool of ``POOL_SIZE`` (the caps
    had a pool of their own), and the flusher has a connection of its own."""
    server = RedisServer()
    peak, stop = [0], threading.Event()

    def sample() -> None:
        client = redis.Redis.from_url(server.url)
        while not stop.is_set():
            clients = int(client.info("clients")["connected_clients"]) - 1  # less this one
            peak[0] = max(peak[0], clients)
            time.sleep(0.01)
        client.close()

    env = relay_env(simulator, RILL_REDIS_URL=server.url, RILL_MAX_STREAMS="10000",
                    RILL_MAX_STREAMS_PER_CLIENT="10000", RILL_WORKER_CONNECTIONS="10000")
    sampler = threading.Thread(target=sample, daemon=True)
    try:
        with run_rill(env, "redis-connections") as rill:
            model, _ = sim_model(tokens=20, itl_ms=50)
            sampler.start()
            port = int(rill.url.rsplit(":", 1)[1])
            answers = _burst(port, json.dumps(ask(model)).encode(), STREAMS)
            stop.set()
            sampler.join(timeout=5)
    finally:
        stop.set()
        server.stop()
    unfinished = [a for a in answers if b"event: done" not in a]
    assert not unfinished, f"{len(unfinished)} did not complete; one: {unfinished[0][:600]!r}"
    assert 0 < peak[0] <= BUDGET, f"the worker held up to {peak[0]} Redis connections"
