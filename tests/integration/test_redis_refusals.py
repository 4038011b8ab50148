"""A Redis that answers but refuses writes, with real processes: gunicorn, the simulator and a
redis-server made to refuse the way production ones do.

- ``oom``: full at ``maxmemory`` under the ``noeviction`` policy (``OOM command not allowed``);
- ``readonly``: a replica, as after a failover that left Rill on the old primary
  (``READONLY``);
- ``misconf``: its snapshots failing, e.g. a full disk, with ``stop-writes-on-bgsave-error``
  (Redis's default; ``MISCONF``).

Reads still work in each. A stream in flight ends with an ``error`` ``hub_unavailable`` event
after every delta it had (none lost, none repeated), a new one gets a 503 (never a 500, never
a hang), and service comes back by itself once Redis takes writes again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from rill.simulator import expected_text
from tests.conftest import RedisServer
from tests.integration.conftest import ask, free_port, relay_env, run_rill, sim_model
from tests.integration.test_resume import hub_env, hub_unavailable, take
from tests.sse_client import Event, parse, text_of

pytestmark = pytest.mark.integration


def refuse(client: redis.Redis, how: str, tmp_path: Path) -> None:
    """Make ``client``'s server refuse writes ``how``; wait until it does."""
    if how == "oom":
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")
    elif how == "readonly":
        client.replicaof("127.0.0.1", str(free_port()))  # a primary that never answers
    else:  # misconf: a snapshot fails (its folder is gone) while save points are set
        (tmp_path / "snapshots").rmdir()
        client.bgsave()
        deadline = time.monotonic() + 10
        while client.info("persistence")["rdb_last_bgsave_status"] != "err":
            assert time.monotonic() < deadline, "the snapshot did not fail"
            time.sleep(0.05)
    with pytest.raises(redis.ResponseError):
        client.set("rill:test:write", 1)


def allow(client: redis.Redis, how: str) -> None:
    if how == "oom":
        client.config_set("maxmemory", "0")
    elif how == "readonly":
        client.replicaof("NO", "ONE")
    else:
        client.config_set("save", "")
    client.set("rill:test:write", 1)


@pytest.mark.parametrize("how", ["oom", "readonly", "misconf"])
def test_a_redis_that_refuses_writes_ends_streams_cleanly_then_service_resumes(
        simulator, how, tmp_path) -> None:
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    # Save points on (Redis refuses writes after a failed snapshot only with some set), in a
    # folder the test can take away: `dir` cannot be set at run time.
    server_redis = (RedisServer("--dir", str(snapshots), "--save", "3600 1")
                    if how == "misconf" else RedisServer())
    client = redis.Redis.from_url(server_redis.url)
    # The per-client cap and the rate limiter on, as deployed: both keep their counts in Redis.
    env = hub_env(simulator, server_redis.url, RILL_MAX_STREAMS_PER_CLIENT="8",
                  RILL_RATELIMIT_ENABLED="true", RILL_RATE_LIMIT="1000/minute")
    try:
        with run_rill(env, f"refusal-{how}") as server:
            model, _ = sim_model(tokens=500, itl_ms=20)
            response = server.chat(ask(model))
            assert response.status_code == 200, response.text
            items = parse(response.iter_content(chunk_size=None))
            seen = [next(i for i in items if isinstance(i, Event) and i.event == "delta")]
            refuse(client, how, tmp_path)
            seen += list(items)  # ends (the request's timeout would fail the test)
            response.close()
            events = [i for i in seen if isinstance(i, Event)]
            last = events[-1]
            assert (last.event, last.json["code"], last.id) == ("error", "hub_unavailable", None)
            ids = [int(e.id) for e in events if e.id is not None]
            assert ids == list(range(ids[0], ids[0] + len(ids)))  # none lost, none repeated
            assert expected_text(500).startswith(text_of(events))
            # The next start is told, before its stream or, if the worker has not seen the
            # refusal yet, as its error event; the one after that, a 503 with JSON.
            assert hub_unavailable(server.chat(ask(model)))
            refused = server.chat(ask(model))
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "hub_unavailable"
            allow(client, how)
            model, _ = sim_model(tokens=5)
            assert text_of(take(server.chat(ask(model)), 100)) == expected_text(5)
        lines = [json.loads(line) for line in server.log().splitlines()
                 if line.startswith("{")]
        assert not [line for line in lines if line.get("status") == 500]
        assert not [line for line in lines if "unhandled" in line.get("message", "")]
        assert "Traceback" not in server.log(), server.log()[-3000:]
    finally:
        client.close()
        server_redis.stop()


def test_rate_limits_hold_while_their_redis_is_away_and_go_back_to_it(simulator) -> None:
    """The limiter's own Redis (``RILL_RATELIMIT_STORAGE_URI``, here beside the memory hub)
    stopped: the limit still holds, counted in the worker's memory (flask-limiter's in-memory
    fallback; failing open lifted it), with one warning and no traceback per request; once
    Redis is back the counts go to it again."""
    server_redis = RedisServer()
    client = redis.Redis.from_url(server_redis.url)
    env = relay_env(simulator, RILL_RATELIMIT_ENABLED="true", RILL_RATE_LIMIT="3/minute",
                    RILL_RATELIMIT_STORAGE_URI=server_redis.url)
    model, _ = sim_model(tokens=2)

    def status() -> int:
        response = server.chat(ask(model))
        text = response.text  # the whole stream, so its slot is free for the next
        assert response.status_code in (200, 429), text
        return response.status_code

    try:
        with run_rill(env, "refusal-limiter") as server:
            assert [status(), status()] == [200, 200]
            assert client.keys("LIMITS*")  # counted in Redis
            server_redis.stop()
            assert [status() for _ in range(4)] == [200, 200, 200, 429]
            server_redis.start()  # empty: a fresh count
            deadline = time.monotonic() + 15  # rechecked 1, 2, 4 … s apart
            while status() == 429:
                assert time.monotonic() < deadline, "the limiter never went back to Redis"
                time.sleep(0.5)
            assert client.keys("LIMITS*")
        log = server.log()
        assert log.count("falling back to in-memory storage") == 1
        assert "Traceback" not in log, log[-3000:]
    finally:
        client.close()
        server_redis.stop()
