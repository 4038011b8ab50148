"""The systems under test, each one worker pinned to one core, relaying the same simulator."""

from __future__ import annotations

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
    try:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [p for k in kids for p in (k, *children(k))]


@dataclass
class Sut:
    """A running system under test."""

    url: str
    process: subprocess.Popen
    command: str
    rss_pid: int = 0

    def pids(self) -> list[int]:
        return [self.process.pid, *children(self.process.pid)]

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass(frozen=True)
class System:
    name: str
    label: str
    argv: tuple[str, ...]  # {port} is replaced
    env: dict[str, str] = field(default_factory=dict)
    worker_is_child: bool = True  # gunicorn: measure RSS in the worker, not the arbiter
    skip: dict[str, str] = field(default_factory=dict)  # scenario: why it is not run

    @contextmanager
    def start(self, simulator: SimulatorProcess, scenario: Scenario,
              core: int) -> Iterator[Sut]:
        port = free_port()
        argv = ["taskset", "-c", str(core), *(a.format(port=port) for a in self.argv)]
        base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RILL_"))}
        env = {**base, "OPENAI_BASE_URL": simulator.base_url, "OPENAI_API_KEY": "sk-bench",
               "RILL_MODEL": "sim", **{k: v.format(port=port) for k, v in self.env.items()}}
        OUT.mkdir(parents=True, exist_ok=True)
        log_path = OUT / f"{self.name}-{scenario.name}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log,
                                       stderr=subprocess.STDOUT)
        settings = " ".join(f"{k}={v.format(port=port)}" for k, v in self.env.items())
        sut = Sut(f"http://127.0.0.1:{port}", process, f"{settings} {' '.join(argv)}".strip())
        try:
            _wait_listening(sut, log_path)
            kids = children(process.pid)
            sut.rss_pid = kids[-1] if self.worker_is_child and kids else process.pid
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
        if sut.process.poll() is not None:
            raise RuntimeError(f"{sut.command} exited early:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{sut.url}/healthz", timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers HTTP (a peer without /healthz says 404)
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{sut.command} did not start:\n{log_path.read_text()[-3000:]}")


GUNICORN = (PY, "-m", "gunicorn")
SYSTEMS = {s.name: s for s in (
    System("rill", "Rill (gunicorn, 1 gevent worker)",
           (*GUNICORN, "-c", "gunicorn.conf.py", "app:app"),
           # Rill's defaults but for what the bench must set: no rate limit or per-client
           # cap (one client opens every stream), room for 8,000 streams, and the upstream
           # closed the moment a client leaves.
           {"RILL_BIND": "127.0.0.1:{port}", "RILL_RATELIMIT_ENABLED": "false",
            "RILL_MAX_STREAMS_PER_CLIENT": "0", "RILL_MAX_STREAMS": "10000",
            "RILL_WORKER_CONNECTIONS": "10000", "RILL_ORPHAN_GRACE_SECONDS": "0"}),
    System("fastapi", "FastAPI + sse-starlette + AsyncOpenAI (uvicorn, uvloop, httptools)",
           (PY, "-m", "uvicorn", "bench.peers.fastapi_app:app", "--host", "127.0.0.1",
            "--port", "{port}", "--loop", "uvloop", "--http", "httptools",
            "--backlog", "2048"),
           {"PEER_MAX_CONNECTIONS": "10000"}, worker_is_child=False),
    System("flask", "Flask on gunicorn gthread (64 threads)",
           (*GUNICORN, "-k", "gthread", "--threads", "64", "-w", "1",
            "--worker-connections", "10000", "-b", "127.0.0.1:{port}",
            "bench.peers.flask_app:app"),
           skip={"held": "64 threads hold at most 64 streams at once",
                 "flowing": "64 threads hold at most 64 streams at once"}),
)}
