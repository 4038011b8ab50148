"""The systems under test, each pinned to one core, relaying the same simulator: Rill with its
memory hub and with its Redis hub (a fresh ``redis-server`` per start, on the load core), and
the peers."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bench.measure import cpu_seconds
from bench.redis_server import RedisServer
from bench.scenarios import Scenario
from rill.simulator import SimulatorProcess

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
PY = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    """``pid``'s descendants, depth first."""
    return [p for k in _children_of(pid) for p in (k, *children(k))]


def _children_of(pid: int) -> list[int]:
    try:
        return [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@dataclass
class Sut:
    """A running system under test: one server process per instance (gunicorn's arbiter, a
    uvicorn process), each on its own port."""

    urls: list[str]
    processes: list[subprocess.Popen]
    command: str
    rss_pids: list[int] = field(default_factory=list)  # the workers (summed)
    redis: RedisServer | None = None

    @property
    def url(self) -> str:
        """Where the load starts its streams: the first instance."""
        return self.urls[0]

    @property
    def follow_url(self) -> str:
        """Where a second tab reads each stream: the last instance (the first when one)."""
        return self.urls[-1]

    def pids(self) -> list[int]:
        return [pid for p in self.processes for pid in (p.pid, *children(p.pid))]

    def workers(self) -> list[int]:
        return [pid for p in self.processes for pid in _children_of(p.pid)]

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    @classmethod
    def of(cls, instances: list[Sut], redis: RedisServer | None) -> Sut:
        """One system of several instances (which share ``redis``)."""
        return cls([u for i in instances for u in i.urls],
                   [p for i in instances for p in i.processes],
                   " & ".join(i.command for i in instances),
                   [pid for i in instances for pid in i.rss_pids], redis)


@dataclass(frozen=True)
class System:
    name: str
    label: str
    argv: tuple[str, ...]  # {port} is replaced
    env: dict[str, str] = field(default_factory=dict)
    worker_is_child: bool = True  # gunicorn: measure RSS in the workers, not the arbiter
    skip: dict[str, str] = field(default_factory=dict)  # scenario: why it is not run
    hub: str = ""  # Rill's hub: "memory" or "redis" ("": a peer)
    workers: int = 1  # per instance
    instances: int = 1  # processes on ports of their own, one Redis between them
    runs: tuple[str, ...] = ()  # the only scenarios it runs (none: every one)

    @contextmanager
    def start(self, simulator: SimulatorProcess, scenario: Scenario, core: int,
              redis_core: int | None = None) -> Iterator[Sut]:
        """Start the system's instances (and, for the Redis hub, its own redis-server first,
        pinned to ``redis_core``) on free ports; stop them all after."""
        OUT.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            redis = None
            if self.hub == "redis":
                redis = stack.enter_context(RedisServer(
                    redis_core, OUT / f"{self.name}-{scenario.name}-redis.log"))
            yield Sut.of([stack.enter_context(self._run(
                simulator, f"{self.name}-{scenario.name}" + (f"-{i}" if i else ""), core,
                {"port": free_port(), "redis_url": redis.url if redis else ""}))
                for i in range(self.instances)], redis)

    @contextmanager
    def _run(self, simulator: SimulatorProcess, name: str, core: int,
             values: dict[str, object]) -> Iterator[Sut]:
        """One instance."""
        argv = ["taskset", "-c", str(core), *(a.format(**values) for a in self.argv)]
        own = {k: v.format(**values) for k, v in self.env.items()}
        base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RILL_"))}
        env = {**base, "OPENAI_BASE_URL": simulator.base_url, "OPENAI_API_KEY": "sk-bench",
               "RILL_MODEL": "sim", "RILL_MODELS": "*", **own}
        log_path = OUT / f"{name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT)
        settings = " ".join(f"{k}={v}" for k, v in own.items())
        sut = Sut([f"http://127.0.0.1:{values['port']}"], [process],
                  f"{settings} {' '.join(argv)}".strip())
        try:
            _wait_listening(sut, log_path)
            if self.worker_is_child:
                _wait_workers(sut, self.workers, log_path)
            sut.rss_pids = (sut.workers() if self.worker_is_child else []) or [process.pid]
            yield sut
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_listening(sut: Sut, log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sut.alive():
            raise RuntimeError(f"{sut.command} exited early:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{sut.url}/healthz", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers HTTP (a peer without /healthz says 404)
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{sut.command} did not start:\n{log_path.read_text()[-3000:]}")


def _wait_workers(sut: Sut, count: int, log_path: Path, timeout: float = 30.0) -> None:
    """Until ``count`` workers run and each has finished booting (its CPU time has stopped
    growing: a worker still importing the app would charge that to the scenario)."""
    deadline = time.monotonic() + timeout
    last: dict[int, float] = {}
    while time.monotonic() < deadline:
        if not sut.alive():
            raise RuntimeError(f"{sut.command} exited early:\n{log_path.read_text()[-3000:]}")
        now = {pid: cpu_seconds(pid) for pid in sut.workers()}
        if len(now) >= count and now == last:
            return
        last = now
        time.sleep(0.3)
    raise RuntimeError(f"{sut.command}: {count} workers did not start:\n"
                       f"{log_path.read_text()[-3000:]}")


GUNICORN = (PY, "-m", "gunicorn")
NO_TABS = {"tabs": "a second tab cannot join a stream (no events endpoint)"}
# Rill's defaults but for what the bench must set: rate limits no load reaches and no
# per-client cap (one client opens every stream), room for 8,000 streams, and the upstream
# closed the moment a client leaves. The limiter stays on, as deployed: it checks every
# request (and with the Redis hub counts in Redis), about 0.15 ms of each stream start.
UNCAPPED = {"RILL_RATE_LIMIT": "1000000/second", "RILL_EVENTS_RATE_LIMIT": "1000000/second",
            "RILL_MAX_STREAMS_PER_CLIENT": "0", "RILL_MAX_SUBSCRIBERS_PER_CLIENT": "0",
            "RILL_MAX_STREAMS": "10000", "RILL_WORKER_CONNECTIONS": "10000"}
RILL_ENV = {"RILL_BIND": "127.0.0.1:{port}", **UNCAPPED, "RILL_ORPHAN_GRACE_SECONDS": "0"}
RILL_ARGV = (*GUNICORN, "-c", "gunicorn.conf.py", "app:app")
# The FastAPI peers: one uvicorn process on uvloop and httptools, the SDK's pool raised so it
# never queues.
PEER_ENV = {"PEER_MAX_CONNECTIONS": "10000"}


def _uvicorn(app: str) -> tuple[str, ...]:
    return (PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "{port}", "--loop",
            "uvloop", "--http", "httptools", "--backlog", "2048")


SYSTEMS = {s.name: s for s in (
    System("rill", "Rill (gunicorn, 1 gevent worker, memory hub)", RILL_ARGV, RILL_ENV,
           hub="memory"),
    # The control for the two-worker target: two workers on one core with no Redis at all
    # (bench/control_app.py lifts Rill's refusal of it). Second tabs would 404 on the other.
    System("rill-2w", "Rill (gunicorn, 2 gevent workers on one core, memory hub: a control, "
           "not a deployment)", (*GUNICORN, "-c", "gunicorn.conf.py", "bench.control_app:app"),
           {**RILL_ENV, "WEB_CONCURRENCY": "2"}, hub="memory", workers=2,
           runs=("throughput", "disconnect", "flowing", "held", "steady")),
    # The Redis hub: gunicorn's default is then a worker per core, so the count is set.
    System("rill-redis", "Rill (gunicorn, 1 gevent worker, Redis hub)", RILL_ARGV,
           {**RILL_ENV, "RILL_REDIS_URL": "{redis_url}", "WEB_CONCURRENCY": "1"}, hub="redis"),
    System("rill-redis-2w", "Rill (gunicorn, 2 gevent workers on one core, Redis hub)",
           RILL_ARGV, {**RILL_ENV, "RILL_REDIS_URL": "{redis_url}", "WEB_CONCURRENCY": "2"},
           hub="redis", workers=2),
    # Two instances on one Redis: streams start on the first, their second tabs read them
    # from the second (the remote path: Redis, then the second worker's shared copy).
    System("rill-redis-2i", "Rill (2 gunicorn instances, 1 gevent worker each, on one core, "
           "Redis hub; second tabs on the second)", RILL_ARGV,
           {**RILL_ENV, "RILL_REDIS_URL": "{redis_url}", "WEB_CONCURRENCY": "1"},
           hub="redis", instances=2, runs=("tabs",)),
    System("fastapi", "FastAPI + sse-starlette + AsyncOpenAI (uvicorn, uvloop, httptools)",
           _uvicorn("bench.peers.fastapi_app:app"), PEER_ENV, worker_is_child=False,
           skip=NO_TABS),
    System("fastapi-tuned", "FastAPI, tuned: raw stream, orjson, StreamingResponse (uvicorn, "
           "uvloop, httptools)", _uvicorn("bench.peers.fastapi_tuned:app"), PEER_ENV,
           worker_is_child=False, skip=NO_TABS),
    System("flask", "Flask on gunicorn gthread (64 threads)",
           (*GUNICORN, "-k", "gthread", "--threads", "64", "-w", "1",
            "--worker-connections", "10000", "-b", "127.0.0.1:{port}",
            "bench.peers.flask_app:app"),
           skip={"held": "64 threads hold at most 64 streams at once",
                 "flowing": "64 threads hold at most 64 streams at once", **NO_TABS}),
)}
