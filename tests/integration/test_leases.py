"""Leases under a busy worker and a killed one, with real processes: two gunicorn instances
sharing one redis-server (or a Redis Cluster), the simulator upstream.

A producer's worker renews one lease key from a native thread, so a worker whose event loop
is kept busy for three leases keeps every stream; a kill -9 still gives ``producer_lost``
within the lease.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from rill.simulator import expected_text
from tests.integration.conftest import ask, relay_env, run_rill, sim_model
from tests.integration.test_resume import redis_url_for
from tests.sse_client import Event, parse, text_of

pytestmark = pytest.mark.integration

LEASE = 1.0
STREAMS = 12


def _follow(url: str, stream_id: str, seen: list[tuple[float, Event]]) -> None:
    with requests.get(f"{url}/api/chat/{stream_id}/events", stream=True,
                      timeout=30) as response:
        for item in parse(response.iter_content(chunk_size=None)):
            if isinstance(item, Event):
                seen.append((time.monotonic(), item))
                if item.event in ("done", "error"):
                    return


@pytest.mark.parametrize("backend", ["redis", "redis-tls", "cluster"])
def test_a_busy_worker_keeps_its_streams_and_a_killed_one_is_lost_within_the_lease(
        simulator, backend, request) -> None:
    url = redis_url_for(request, backend)
    env = relay_env(simulator, RILL_REDIS_URL=url, RILL_PRODUCER_LEASE_SECONDS=str(LEASE),
                    RILL_STALL_TIMEOUT_SECONDS="60", RILL_ORPHAN_GRACE_SECONDS="30")
    model, _ = sim_model(tokens=120, itl_ms=100)  # 12 s each
    with run_rill(env, f"busy-{backend}-a", target="tests.integration.busy_app:app") as a, \
            run_rill(env, f"busy-{backend}-b") as b, \
            ThreadPoolExecutor(max_workers=2 * STREAMS) as pool:
        posts: list[list[tuple[float, Event]]] = [[] for _ in range(STREAMS)]
        follows: list[list[tuple[float, Event]]] = [[] for _ in range(STREAMS)]
        started = threading.Barrier(STREAMS + 1, timeout=30)

        follows_done: list = []

        def produce(i: int) -> None:
            # The POST's connection breaks when its instance is killed: expected here.
            with contextlib.suppress(requests.RequestException, OSError), \
                    a.chat(ask(model)) as response:
                items = parse(response.iter_content(chunk_size=None))
                for item in items:
                    if isinstance(item, Event):
                        posts[i].append((time.monotonic(), item))
                        if item.event == "delta":
                            break
                started.wait()
                follows_done.append(pool.submit(_follow, b.url,
                                                posts[i][0][1].json["stream_id"],
                                                follows[i]))
                for item in items:
                    if isinstance(item, Event):
                        posts[i].append((time.monotonic(), item))

        producing = [pool.submit(produce, i) for i in range(STREAMS)]
        started.wait()
        time.sleep(0.5)
        busy_from = time.monotonic()
        spun = requests.get(f"{a.url}/_test/busy", params={"seconds": 3 * LEASE}, timeout=30)
        busy_to = time.monotonic()
        assert spun.status_code == 200 and busy_to - busy_from >= 3 * LEASE
        time.sleep(2 * LEASE)  # the streams carry on after the busy spell
        for seen in follows:
            assert not any(e.event == "error" for _, e in seen), seen[-1]
            assert any(at > busy_to for at, _ in seen), "a stream stopped after the spell"
        for pid in a.pids():
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        for future in [*producing, *follows_done]:
            future.result(timeout=30)
    for seen in follows:
        events = [e for _, e in seen]
        assert events[-1].event == "error" and events[-1].json["code"] == "producer_lost"
        lost_at = seen[-1][0]
        assert lost_at - killed < LEASE + 0.25, lost_at - killed
        ids = [int(e.id) for e in events]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # each once, none missing
        assert expected_text(120).startswith(text_of(events))
        assert len(text_of(events)) > 0
