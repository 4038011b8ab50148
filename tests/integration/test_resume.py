"""Resumable streams across real processes: gunicorn instances, the simulator, redis-server.

``pair`` is two Rill instances sharing one Redis (A produces, B resumes), or, for the memory
hub, one instance standing for both.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from rill.config import DEFAULTS
from rill.hub import create
from rill.simulator import expected_text
from tests.conftest import RedisCluster, RedisServer, TlsRedisServer
from tests.integration.conftest import RillServer, ask, relay_env, run_rill, sim_model
from tests.sse_client import Event, events_only, parse, text_of

pytestmark = pytest.mark.integration


def hub_env(simulator, redis_url: str | None = None, **overrides: str) -> dict[str, str]:
    env = relay_env(simulator, **{"RILL_ORPHAN_GRACE_SECONDS": "30", **overrides})
    if redis_url:
        env["RILL_REDIS_URL"] = redis_url
    return env


def redis_url_for(request, backend: str) -> str | None:
    """The hub's URL for ``backend``: None (memory), one redis-server (``redis-tls``: over
    TLS, with a password), or a Redis Cluster."""
    if backend == "memory":
        return None
    return request.getfixturevalue({"redis": "redis_server", "redis-tls": "redis_tls_server",
                                    "cluster": "redis_cluster"}[backend]).url


@pytest.fixture(scope="module", params=["memory", "redis", "redis-tls", "cluster"])
def pair(request, simulator) -> Iterator[tuple[RillServer, RillServer]]:
    if request.param == "memory":
        with run_rill(hub_env(simulator), "hub-memory") as server:
            yield server, server
        return
    redis_url = redis_url_for(request, request.param)
    with run_rill(hub_env(simulator, redis_url), f"hub-{request.param}-a") as a, \
            run_rill(hub_env(simulator, redis_url), f"hub-{request.param}-b") as b:
        yield a, b


def hub_unavailable(response: requests.Response) -> bool:
    """Whether ``response`` told its client ``hub_unavailable``: a 503 before the stream,
    or its last event."""
    if response.status_code != 200:
        return (response.status_code, response.json()["error"]["code"]) == (
            503, "hub_unavailable")
    events = events_only(parse(response.iter_content(chunk_size=None)))
    return events[-1].event == "error" and events[-1].json["code"] == "hub_unavailable"


def take(response: requests.Response, deltas: int) -> list[Event]:
    """Read events until ``deltas`` deltas (or the end), then drop the connection."""
    seen: list[Event] = []
    with response:
        assert response.status_code == 200, response.text
        count = 0
        for item in parse(response.iter_content(chunk_size=None)):
            if isinstance(item, Event):
                seen.append(item)
                count += item.event == "delta"
                if count >= deltas or item.event in ("done", "error"):
                    break
    return seen


def resume(server: RillServer, stream_id: str, last_id: str | None,
           deltas: int = 10**9) -> list[Event]:
    headers = {"Last-Event-ID": last_id} if last_id is not None else {}
    response = requests.get(f"{server.url}/api/chat/{stream_id}/events", headers=headers,
                            stream=True, timeout=30)
    return take(response, deltas)


def test_stream_resumes_on_another_instance_byte_identical(pair) -> None:
    a, b = pair
    model, _ = sim_model(tokens=60, itl_ms=20)
    first = take(a.chat(ask(model)), 10)
    stream_id = first[0].json["stream_id"]
    rest = resume(b, stream_id, first[-1].id)
    events = first + rest
    assert [e.id for e in events] == [str(i) for i in range(len(events))]
    assert text_of(events) == expected_text(60)
    assert events[-1].event == "done"
    again = events_only(parse([requests.get(f"{b.url}/api/chat/{stream_id}/events",
                                            timeout=30).content]))
    assert [(e.id, e.data) for e in again] == [(e.id, e.data) for e in events]


def test_tabs_on_another_instance_each_see_the_whole_live_stream(pair) -> None:
    """Three tabs on B follow a stream A is producing (they share B's copy of it, fed by
    one fetch per flush): each sees every event once, as A's own client does."""
    a, b = pair
    model, _ = sim_model(tokens=80, itl_ms=20)
    first = take(a.chat(ask(model)), 2)
    stream_id = first[0].json["stream_id"]
    with ThreadPoolExecutor(max_workers=3) as pool:
        tabs = list(pool.map(lambda _: resume(b, stream_id, None), range(3)))
    for events in tabs:
        assert [e.id for e in events] == [str(i) for i in range(len(events))]
        assert text_of(events) == expected_text(80) and events[-1].event == "done"
    assert [(e.id, e.data) for e in tabs[1]] == [(e.id, e.data) for e in tabs[0]]


def test_random_drops_and_resumes_lose_and_repeat_nothing(pair) -> None:
    a, b = pair
    model, _ = sim_model(tokens=30, itl_ms=5)
    rng = random.Random(7)

    def run(seed: int) -> tuple[str, list[str]]:
        local = random.Random(seed)
        servers = [a, b]
        events = take(servers[local.randrange(2)].chat(ask(model)), local.randrange(1, 31))
        stream_id = events[0].json["stream_id"]
        while events[-1].event not in ("done", "error"):
            events += resume(servers[local.randrange(2)], stream_id, events[-1].id,
                             local.randrange(1, 31))
        return text_of(events), [e.id for e in events]

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(run, [rng.randrange(10**9) for _ in range(200)]))
    lost = sum(text != expected_text(30) for text, _ in results)
    duplicated = sum(len(ids) != len(set(ids)) for _, ids in results)
    assert (lost, duplicated) == (0, 0)
    assert all(ids == [str(i) for i in range(len(ids))] for _, ids in results)


def test_unknown_stream_is_a_404_and_a_bad_last_event_id_a_400(pair) -> None:
    a, _ = pair
    response = requests.get(f"{a.url}/api/chat/{'x' * 22}/events", timeout=5)
    assert (response.status_code, response.json()["error"]["code"]) == (404,
                                                                          "stream_not_found")
    response = requests.post(f"{a.url}/api/chat/{'x' * 22}/cancel", timeout=5)
    assert response.status_code == 404
    model, _ = sim_model(tokens=3)
    stream_id = take(a.chat(ask(model)), 100)[0].json["stream_id"]
    response = requests.get(f"{a.url}/api/chat/{stream_id}/events",
                            headers={"Last-Event-ID": "x"}, timeout=5)
    assert response.json()["error"]["code"] == "invalid_last_event_id"


def test_cancel_on_any_instance_stops_the_upstream(pair, simulator) -> None:
    a, b = pair
    model, tag = sim_model(tokens=500, itl_ms=30)
    response = a.chat(ask(model))
    items = parse(response.iter_content(chunk_size=None))
    start = next(i for i in items if isinstance(i, Event))
    stream_id = start.json["stream_id"]
    next(i for i in items if isinstance(i, Event) and i.event == "delta")
    for _ in range(2):  # idempotent
        cancel = requests.post(f"{b.url}/api/chat/{stream_id}/cancel", timeout=5)
        assert cancel.status_code == 202
    rest = events_only(items)
    response.close()
    assert rest[-1].event == "done"
    assert rest[-1].json["finish_reason"] == "cancelled"
    record = simulator.wait_for(tag, lambda r: r["outcome"] == "client_closed", timeout=3)
    assert record["tokens_sent"] < 500


@pytest.mark.parametrize("backend", ["memory", "redis", "cluster"])
def test_orphan_is_cancelled_after_the_grace_and_a_resumed_one_is_not(simulator, backend,
                                                                        request) -> None:
    redis_url = redis_url_for(request, backend)
    env = hub_env(simulator, redis_url, RILL_ORPHAN_GRACE_SECONDS="1")
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(run_rill(env, f"orphan-{backend}-a"))
        b = a if backend == "memory" else stack.enter_context(run_rill(env, "orphan-b"))
        model, tag = sim_model(tokens=200, itl_ms=30)
        first = take(a.chat(ask(model)), 2)
        left = time.monotonic()
        record = simulator.wait_for(tag, lambda r: r["outcome"] == "client_closed",
                                    timeout=5)
        assert 0.8 < time.monotonic() - left < 4
        assert record["tokens_sent"] < 200
        assert resume(b, first[0].json["stream_id"], None)[-1].json["finish_reason"] == \
            "cancelled"

        model, tag = sim_model(tokens=60, itl_ms=30)
        first = take(a.chat(ask(model)), 2)
        time.sleep(0.5)
        rest = resume(b, first[0].json["stream_id"], first[-1].id)
        assert text_of(first + rest) == expected_text(60)
        assert simulator.find(tag)["outcome"] == "completed"


@pytest.mark.parametrize("backend", ["redis", "redis-tls", "cluster"])
def test_killed_producer_is_reported_as_producer_lost(simulator, backend, request) -> None:
    env = hub_env(simulator, redis_url_for(request, backend), RILL_PRODUCER_LEASE_SECONDS="2")
    with run_rill(env, f"lost-{backend}-a") as a, run_rill(env, f"lost-{backend}-b") as b:
        model, _ = sim_model(tokens=500, itl_ms=50)
        first = take(a.chat(ask(model)), 3)
        stream_id = first[0].json["stream_id"]
        response = requests.get(f"{b.url}/api/chat/{stream_id}/events", stream=True,
                                timeout=30)
        items = parse(response.iter_content(chunk_size=None))
        next(i for i in items if isinstance(i, Event) and i.event == "delta")
        for pid in a.pids():
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        events = events_only(items)
        response.close()
    assert events[-1].json["code"] == "producer_lost"
    assert events[-1].at - killed < 2 + 0.25  # within the lease (plus the test's own lag)
    assert int(events[-1].id) == int(events[-2].id) + 1


@pytest.mark.parametrize("backend", ["redis", "redis-tls", "cluster"])
def test_redis_outage_gives_documented_errors_then_service_resumes(simulator, backend,
                                                                   tmp_path) -> None:
    redis: RedisServer | RedisCluster = (RedisServer() if backend == "redis"
                                         else TlsRedisServer(tmp_path) if backend == "redis-tls"
                                         else RedisCluster(tmp_path))
    env = hub_env(simulator, redis.url, RILL_PRODUCER_LEASE_SECONDS="1")
    try:
        redis.stop()  # down when the worker boots: it boots, and refuses streams
        with run_rill(env, f"outage-{backend}") as server:
            model, _ = sim_model(tokens=500, itl_ms=30)
            refused = server.chat(ask(model))
            assert (refused.status_code, refused.json()["error"]["code"]) == (
                503, "hub_unavailable")
            redis.start()
            response = server.chat(ask(model))
            items = parse(response.iter_content(chunk_size=None))
            next(i for i in items if isinstance(i, Event) and i.event == "delta")
            redis.stop()
            rest = list(items)
            response.close()
            assert isinstance(rest[-1], Event) and rest[-1].id is None
            assert rest[-1].json["code"] == "hub_unavailable"
            # A worker that has not yet seen the outage (the hub writes in batches, after
            # the answer starts) tells it after the start, as an error event.
            assert hub_unavailable(server.chat(ask(model)))
            redis.start()
            model, _ = sim_model(tokens=5)
            events = take(server.chat(ask(model)), 100)
            assert text_of(events) == expected_text(5)
            # Its lease is renewed again: a long stream stays live for another worker.
            model, _ = sim_model(tokens=200, itl_ms=20)
            stream_id = take(server.chat(ask(model)), 1)[0].json["stream_id"]
            time.sleep(1.5)
            elsewhere = create({**DEFAULTS, "RILL_REDIS_URL": redis.url})
            assert elsewhere.state(stream_id) == "live"
            elsewhere.close()  # type: ignore[attr-defined]
    finally:
        nodes = redis.processes if isinstance(redis, RedisCluster) else [redis.process]
        if any(p.poll() is None for p in nodes):
            redis.stop()


@pytest.mark.parametrize("backend", ["memory", "redis", "cluster"])
def test_sigterm_ends_every_in_flight_stream_with_done_or_shutdown(simulator, backend,
                                                                    request) -> None:
    redis_url = redis_url_for(request, backend)
    env = hub_env(simulator, redis_url, RILL_GRACEFUL_TIMEOUT="4")
    long_model, _ = sim_model(tokens=1000, itl_ms=50)
    short_model, _ = sim_model(tokens=20, itl_ms=50)
    started = threading.Barrier(101, timeout=30)

    def one(i: int) -> Event:
        # Each thread makes its own connection: gevent sockets stay in their thread.
        with server.chat(ask(short_model if i % 2 else long_model)) as response:
            items = parse(response.iter_content(chunk_size=None))
            events = [next(i for i in items if isinstance(i, Event))]
            started.wait()
            events += events_only(items)
        return events[-1]

    with run_rill(env, f"drain-{backend}") as server, \
            ThreadPoolExecutor(max_workers=100) as pool:
        futures = [pool.submit(one, i) for i in range(100)]
        started.wait()
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        finals = [f.result(timeout=30) for f in futures]
        server.process.wait(timeout=15)
    outcomes = {(e.event, e.json.get("finish_reason") or e.json.get("code")) for e in finals}
    assert outcomes <= {("done", "stop"), ("error", "shutdown")}
    assert ("done", "stop") in outcomes and ("error", "shutdown") in outcomes
    shutdown = next(e for e in finals if e.event == "error")
    assert shutdown.json["retry_after"] == 1


@pytest.mark.parametrize("backend", ["redis", "redis-tls", "cluster"])
def test_per_client_stream_cap_is_shared_across_instances(simulator, backend,
                                                          request) -> None:
    """Streams count while their producer's lease lives: a killed instance frees its own."""
    env = hub_env(simulator, redis_url_for(request, backend),
                  RILL_MAX_STREAMS_PER_CLIENT="2", RILL_PRODUCER_LEASE_SECONDS="1")
    with run_rill(env, f"caps-{backend}-a") as a, run_rill(env, f"caps-{backend}-b") as b:
        model, _ = sim_model(tokens=1000, itl_ms=50)
        first = [take(a.chat(ask(model)), 1) for _ in range(2)]
        refused = b.chat(ask(model))
        assert (refused.status_code, refused.json()["error"]["code"]) == (429,
                                                                          "too_many_streams")
        assert refused.headers["Retry-After"] == "5"
        stream_id = first[0][0].json["stream_id"]
        requests.post(f"{b.url}/api/chat/{stream_id}/cancel", timeout=5)
        deadline = time.monotonic() + 5
        while (response := b.chat(ask(sim_model(tokens=2)[0]))).status_code == 429:
            response.close()
            assert time.monotonic() < deadline, "a cancelled stream kept its slot"
            time.sleep(0.1)
        take(response, 100)
        for pid in a.pids():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        held = []
        while len(held) < 2:
            response = b.chat(ask(model))
            if response.status_code == 200:
                held.append(take(response, 1))
            else:
                response.close()
                assert time.monotonic() < deadline, "a killed instance's streams kept slots"
                time.sleep(0.1)
        for events in held:
            requests.post(f"{b.url}/api/chat/{events[0].json['stream_id']}/cancel", timeout=5)


def test_gunicorn_refuses_several_workers_on_the_memory_hub() -> None:
    import subprocess
    import sys

    from tests.integration.conftest import ROOT, free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith(("RILL_", "OPENAI_"))}
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--workers", "2",
         "--bind", f"127.0.0.1:{free_port()}", "app:app"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "need RILL_REDIS_URL" in result.stdout + result.stderr
