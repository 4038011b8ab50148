"""README's `scripts/serve --workers 2`: several workers need Redis, and serve says how or
starts a private redis-server. Real processes: the script, gunicorn, redis-server, the
simulator."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from rill.simulator import expected_text
from tests.integration.conftest import ARTIFACTS, ROOT, ask, free_port, relay_env, sim_model
from tests.sse_client import events_only, parse, text_of

pytestmark = pytest.mark.integration


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("OPENAI_", "RILL_", "WEB_CONCURRENCY"))}
    return {**base, "RILL_RATELIMIT_ENABLED": "false", **extra}


def test_serve_with_two_workers_starts_a_private_redis_and_stops_it(simulator) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    port = free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / f"serve-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["scripts/serve", "--workers", "2"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env=_env(RILL_BIND=f"127.0.0.1:{port}", **relay_env(simulator)),
            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening yet, or listening while its workers still import the app
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        text = log_path.read_text()
        assert "private redis-server" in text
        redis_port = int(text.split("private redis-server on")[1].split()[0].split(":")[1])
        model, _ = sim_model(tokens=20, itl_ms=5)
        for _ in range(12):  # over both workers; each resumes on whichever worker it lands
            with requests.post(f"{url}/api/chat", json=ask(model), stream=True,
                               timeout=30) as response:
                events = events_only(parse(response.iter_content(chunk_size=None)))
            assert text_of(events) == expected_text(20)
            again = requests.get(f"{url}/api/chat/{events[0].json['stream_id']}/events",
                                 timeout=30)
            assert text_of(events_only(parse([again.content]))) == expected_text(20)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        with socket.socket() as sock:  # the private redis-server went with it
            assert sock.connect_ex(("127.0.0.1", redis_port)) != 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_serve_with_two_workers_and_no_redis_says_what_to_do(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "cat", "touch", "bash"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    result = subprocess.run(["bash", "scripts/serve", "--workers", "2"], cwd=ROOT,
                            env=_env(PATH=str(bin_dir)), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "apt-get install -y redis-server" in result.stderr
    assert "RILL_REDIS_URL=redis://" in result.stderr
