"""Connections Redis closes while they sit idle, with real processes: two gunicorn instances
and a real redis-server, in plain TCP and over TLS with a password (``rediss://``, as managed
Redis services run it).

Managed services close idle clients (Redis's ``timeout``), and a restart or a failover
closes every connection at once. No request, readiness probe or stream may fail for a
connection that went while idle: over TLS, redis-py's pool lends such a connection without
noticing (its check before lending sees the close only in plain TCP), and a pool made from a
URL retries nothing, so before ``redis_io.connect`` retried once, each one cost a 503
(``/readyz``, then the next start) or a ``hub_unavailable``.
"""

from __future__ import annotations

import json
import time

import pytest
import redis
import requests

from rill.simulator import expected_text
from tests.conftest import RedisServer, TlsRedisServer
from tests.integration.conftest import ask, run_rill, sim_model
from tests.integration.test_resume import hub_env, resume, take
from tests.sse_client import text_of

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["redis", "redis-tls"])
def test_connections_redis_closed_while_idle_fail_nothing(simulator, backend,
                                                          tmp_path) -> None:
    server = RedisServer() if backend == "redis" else TlsRedisServer(tmp_path)
    # The rate limiter and the per-client cap on, as deployed: they talk to Redis too.
    env = hub_env(simulator, server.url, RILL_RATELIMIT_ENABLED="true",
                  RILL_RATE_LIMIT="1000/minute", RILL_MAX_STREAMS_PER_CLIENT="8")
    try:
        with run_rill(env, f"idle-{backend}-a") as a, run_rill(env, f"idle-{backend}-b") as b:

            def use() -> None:
                """Every path to Redis: probes, a start on A, its resume on B, a cancel."""
                for instance in (a, b):
                    ready = requests.get(f"{instance.url}/readyz", timeout=10)
                    assert (ready.status_code, ready.json()["hub"]) == (200, "ok")
                model, _ = sim_model(tokens=40, itl_ms=10)
                first = take(a.chat(ask(model)), 5)
                rest = resume(b, first[0].json["stream_id"], first[-1].id)
                assert text_of(first + rest) == expected_text(40)
                assert rest[-1].event == "done"
                model, _ = sim_model(tokens=2000, itl_ms=10)
                stream_id = take(a.chat(ask(model)), 1)[0].json["stream_id"]
                cancel = requests.post(f"{b.url}/api/chat/{stream_id}/cancel", timeout=10)
                assert cancel.status_code == 202, cancel.text

            use()  # every kind of connection made, then left idle
            with redis.Redis.from_url(server.url) as admin:
                admin.config_set("timeout", 1)
                before = admin.info("stats")["total_connections_received"]
            time.sleep(3)  # Redis closes the idle ones (not the listeners' pub/sub)
            use()
            use()
            with redis.Redis.from_url(server.url) as admin:
                assert admin.info("stats")["total_connections_received"] > before + 2, (
                    "Redis closed no connection: the test tested nothing")
        for instance in (a, b):
            lines = [json.loads(line) for line in instance.log().splitlines()
                     if line.startswith("{")]
            assert not [line for line in lines if line.get("status", 200) >= 500]
            assert not [line for line in lines if line.get("outcome") == "hub_unavailable"]
            assert "Traceback" not in instance.log()
    finally:
        server.stop()
