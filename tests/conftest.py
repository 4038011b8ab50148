"""Fixtures for in-process tests: ``app``, ``client``, ``runner`` and a fake upstream.

Sockets are made cooperative first, as a gevent worker makes them, so in-process tests of
the Redis hub can block in one greenlet while producers run in others. Only ``socket`` is
patched: threads and ``select`` stay real for pytest-timeout and Playwright.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_socket()

import gc
from collections.abc import Iterator
from typing import Any

import gevent
import pytest
from flask import Flask

from app import create_app
from rill.chat_request import ChatRequest
from rill.errors import RillError
from rill.upstreams import Event

TEST_CONFIG = {
    "TESTING": True,
    "RILL_UPSTREAM": "demo",
    "RILL_RATELIMIT_ENABLED": False,
    "RILL_DEMO_TTFT_MS": 0,
    "RILL_DEMO_TOKENS_PER_SECOND": 10_000,
}

Step = Event | float | Exception  # an event to yield, seconds to sleep, or an error to raise


class FakeUpstream:
    """An upstream that replays scripted steps and records what it was asked.

    ``enqueue(steps)`` scripts the next stream; ``fail_open(error)`` makes the next
    ``open`` raise. ``requests`` holds every :class:`ChatRequest`; ``closed`` counts
    streams whose ``close`` ran.
    """

    demo = False

    def __init__(self) -> None:
        self.scripts: list[list[Step]] = []
        self.open_errors: list[RillError] = []
        self.requests: list[ChatRequest] = []
        self.closed = 0

    def enqueue(self, steps: list[Step]) -> None:
        self.scripts.append(steps)

    def fail_open(self, error: RillError) -> None:
        self.open_errors.append(error)

    def open(self, request: ChatRequest) -> FakeStream:
        self.requests.append(request)
        if self.open_errors:
            raise self.open_errors.pop(0)
        return FakeStream(self, self.scripts.pop(0) if self.scripts else [], request.model)


class FakeStream:
    def __init__(self, upstream: FakeUpstream, steps: list[Step], model: str) -> None:
        self.upstream, self.steps, self.model = upstream, steps, model

    def __iter__(self) -> Iterator[Event]:
        for step in self.steps:
            if isinstance(step, Exception):
                raise step
            if isinstance(step, int | float):
                gevent.sleep(step)
            else:
                yield step

    def batches(self) -> Iterator[list[Event]]:
        """Events scripted with no sleep between them arrive together, as one read."""
        batch: list[Event] = []
        for step in self.steps:
            if isinstance(step, Exception):
                if batch:
                    yield batch
                raise step
            if isinstance(step, int | float):
                if batch:
                    yield batch
                    batch = []
                gevent.sleep(step)
            else:
                batch.append(step)
        if batch:
            yield batch

    def close(self) -> None:
        self.upstream.closed += 1


@pytest.fixture(scope="module", autouse=True)
def _collect_after_each_module() -> Iterator[None]:
    """Collect garbage as each test file ends, so an object left unclosed (a socket, a
    file: ResourceWarning, an error here) fails a test of the file that leaked it, not of
    whichever file happened to be running when the collector came by."""
    yield
    gc.collect()


@pytest.fixture
def config() -> dict[str, Any]:
    """Per-test config overrides, applied on top of ``TEST_CONFIG``."""
    return {}


@pytest.fixture
def app(config: dict[str, Any]) -> Flask:
    return create_app({**TEST_CONFIG, **config})


@pytest.fixture
def fake_upstream(app: Flask) -> FakeUpstream:
    fake = FakeUpstream()
    app.extensions["rill"].upstream = fake
    return fake


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> Any:
    return app.test_cli_runner()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A real ``redis-server`` on a free loopback port, with no persistence (``extra``
    arguments come after, and win)."""

    def __init__(self, *extra: str) -> None:
        import shutil
        import subprocess

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (.ci/run installs it)")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._binary = binary
        self._subprocess = subprocess
        self._extra = extra
        self.process: Any = None
        self.start()

    def start(self) -> None:
        import redis

        self.process = self._subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", *self._extra],
            stdout=self._subprocess.DEVNULL, stderr=self._subprocess.DEVNULL)
        _wait_ping(redis.Redis.from_url(self.url))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.stop()


# A password that looks like none of the shapes the log filter knows (no key prefix, no JWT).
REDIS_PASSWORD = "tide-marsh-0451-lantern"


class TlsRedisServer(RedisServer):
    """A ``redis-server`` that speaks only TLS and wants a password, as managed Redis services
    run (``rediss://:<password>@…``): a self-signed certificate for 127.0.0.1 in ``folder``,
    passed to clients as the URL's ``ssl_ca_certs``."""

    def __init__(self, folder: Any, *extra: str) -> None:
        from tests.test_deploy import self_signed_cert

        self.cert, self._key = self_signed_cert(folder)
        super().__init__(*extra)

    def start(self) -> None:
        import redis

        self.url = (f"rediss://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"
                    f"?ssl_ca_certs={self.cert}")
        self.process = self._subprocess.Popen(
            [self._binary, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(self.cert), "--tls-key-file", str(self._key),
             "--tls-ca-cert-file", str(self.cert), "--tls-auth-clients", "no",
             "--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no",
             *self._extra],
            stdout=self._subprocess.DEVNULL, stderr=self._subprocess.DEVNULL)
        _wait_ping(redis.Redis.from_url(self.url))


@pytest.fixture(scope="session")
def redis_tls_server(tmp_path_factory) -> Iterator[TlsRedisServer]:
    server = TlsRedisServer(tmp_path_factory.mktemp("redis-tls"))
    yield server
    server.stop()


class RedisCluster:
    """A real Redis Cluster: three ``redis-server --cluster-enabled yes`` masters on free
    loopback ports (each with its bus port, +10000, free too), joined by
    ``redis-cli --cluster create``. ``url`` is ``redis+cluster://`` with every node."""

    def __init__(self, folder: Any) -> None:
        import shutil
        import subprocess


        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            pytest.skip("redis-server is not installed (.ci/run installs it)")
        self.ports: list[int] = []
        while len(self.ports) < 3:
            port = _free_port()
            if port + 10000 < 65536 and _port_free(port + 10000):
                self.ports.append(port)
        self._binary, self._folder = binary, folder
        self.start()
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True,
                       stdout=subprocess.DEVNULL, timeout=30)
        self._wait_ok()
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def start(self) -> None:
        """Start the nodes (again: each keeps its cluster config file, so they rejoin)."""
        import subprocess

        import redis

        self.processes = [subprocess.Popen(
            [self._binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--cluster-enabled", "yes",
             "--cluster-config-file", str(self._folder / f"nodes-{port}.conf"),
             "--cluster-node-timeout", "2000"],
            cwd=self._folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for port in self.ports]
        for port in self.ports:
            _wait_ping(redis.Redis(port=port))
        if getattr(self, "url", None):
            self._wait_ok()

    def _wait_ok(self) -> None:
        import time

        import redis

        deadline = time.monotonic() + 20
        for port in self.ports:
            node = redis.Redis(port=port)
            while node.cluster("info").get("cluster_state") != "ok":
                assert time.monotonic() < deadline, "the cluster did not form"
                time.sleep(0.05)
            node.close()

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=10)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_ping(client: Any) -> None:
    import time

    import redis

    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            client.close()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()
