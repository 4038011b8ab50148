"""Real processes: the upstream simulator and gunicorn with a gevent worker, on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from rill.simulator import SimulatorProcess

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
API_KEY = "sk-test-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RillServer:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> list[int]:
        """The workers, then gunicorn's arbiter (so a kill -9 in this order leaves no worker
        behind for the arbiter to replace)."""
        pid = self.process.pid
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [*map(int, children.read().split()), pid]

    def chat(self, body: dict, **kwargs) -> requests.Response:
        return requests.post(f"{self.url}/api/chat", json=body, stream=True,
                             timeout=kwargs.pop("timeout", 30), **kwargs)


@contextmanager
def run_rill(env: dict[str, str], name: str = "rill", args: tuple[str, ...] = (),
             target: str = "app:app", health: str = "/healthz") -> Iterator[RillServer]:
    """Start ``gunicorn -c gunicorn.conf.py app:app`` on a free port; stop it after."""
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RILL_"))}
    # RILL_KEEPALIVE 1: a worker that stops waits for its idle keep-alive connections to
    # time out (gunicorn's gevent worker), which at 5 s was most of many tests' time.
    full_env = {**base, "RILL_BIND": f"127.0.0.1:{port}", "RILL_RATELIMIT_ENABLED": "false",
                "PYTHONUNBUFFERED": "1", "RILL_KEEPALIVE": "1", **env}
    server = start_server([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *args,
                           target], port, env=full_env, name=name)
    with serving(server, health):
        yield server


def start_server(argv: list[str], port: int, *, env: dict[str, str], name: str,
                 cwd: Path = ROOT) -> RillServer:
    """Start ``argv``, a server that will listen on ``port``; its output goes to a log in
    tests/artifacts."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / f"{name}-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    return RillServer(f"http://127.0.0.1:{port}", process, log_path)


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def serving(server: RillServer, health: str) -> Iterator[RillServer]:
    """Wait until ``GET health`` answers 200, yield the server, and stop it after."""
    try:
        _wait_healthy(server, health)
        yield server
    finally:
        stop_server(server.process)


def _wait_healthy(server: RillServer, health: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited early:\n{server.log()}")
        try:
            if requests.get(f"{server.url}{health}", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or a worker still booting (a cold start compiles)
        time.sleep(0.05)
    raise RuntimeError(f"the server did not become healthy:\n{server.log()}")


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorProcess]:
    with SimulatorProcess() as sim:
        yield sim


def sim_model(**params: object) -> tuple[str, str]:
    """Return a simulator model string for ``params`` with a fresh tag, and the tag."""
    tag = uuid.uuid4().hex[:12]
    query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in {**params, "tag": tag}.items())
    return f"sim?{query}", tag


def ask(model: str) -> dict:
    return {"messages": [{"role": "user", "content": "Hi"}], "model": model}


def relay_env(simulator: SimulatorProcess, **overrides: str) -> dict[str, str]:
    """Environment for a Rill that relays the simulator through the OpenAI SDK."""
    return {
        "OPENAI_BASE_URL": simulator.base_url,
        "OPENAI_API_KEY": API_KEY,
        "RILL_MODEL": "sim",
        "RILL_MODELS": "*",  # each request names its simulator scenario
        "RILL_UPSTREAM_MAX_RETRIES": "0",
        "RILL_STALL_TIMEOUT_SECONDS": "2",
        "RILL_HEARTBEAT_SECONDS": "1",
        "RILL_MAX_STREAMS_PER_CLIENT": "0",
        "RILL_MAX_SUBSCRIBERS_PER_CLIENT": "0",  # every test client is 127.0.0.1
        "RILL_ORPHAN_GRACE_SECONDS": "0",
        **overrides,
    }


def page_env(simulator: SimulatorProcess, **overrides: str) -> dict[str, str]:
    """:func:`relay_env` for the chat page in a browser: Rill's default orphan grace, so a
    Stop must cancel the answer on the server, not merely disconnect from it."""
    return relay_env(simulator, **{"RILL_ORPHAN_GRACE_SECONDS": "30", **overrides})


@pytest.fixture(scope="session")
def rill(simulator: SimulatorProcess) -> Iterator[RillServer]:
    """One gunicorn gevent worker relaying the simulator, shared by the session."""
    with run_rill(relay_env(simulator), "relay") as server:
        yield server


# The chat page's tests (test_page*.py): Debian's Chromium under Playwright.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator:
    """A 1280 by 800 page in a context of its own; ``page.console_messages`` collects its
    console."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.console_messages = []  # type: ignore[attr-defined]
    page.on("console", lambda m: page.console_messages.append(m.text))
    yield page
    context.close()


@pytest.fixture
def context(browser) -> Iterator:
    """One browser context at 1280 px: its pages are tabs sharing localStorage."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context
    context.close()
