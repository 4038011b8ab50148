"""The stream hub, memory and Redis alike, and the producer and subscriber built on it.

The Redis cases run against a real redis-server on a free loopback port.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import gevent
import pytest

from rill import errors
from rill.config import DEFAULTS
from rill.generation import Generation, Limits
from rill.hub import Hub, create
from rill.producers import TaskProducer
from rill.relay import subscribe
from tests.conftest import FakeStream, FakeUpstream
from tests.sse_client import Event, events_only, parse, text_of

DONE = ("done", {"finish_reason": "stop", "usage": None})


@pytest.fixture(params=["memory", "redis", "cluster"])
def hub_config(request) -> dict[str, Any]:
    config = {**DEFAULTS, "RILL_PRODUCER_LEASE_SECONDS": 0.6, "RILL_HEARTBEAT_SECONDS": 0.3}
    if request.param != "memory":
        server = "redis_server" if request.param == "redis" else "redis_cluster"
        config["RILL_REDIS_URL"] = request.getfixturevalue(server).url
    return config


@pytest.fixture
def hub(hub_config) -> Iterator[Hub]:
    hub = create(hub_config)
    yield hub
    getattr(hub, "close", lambda: None)()


def flushed(hub: Hub) -> None:
    """Wait until what was appended is readable (the Redis hub flushes in the background)."""
    with gevent.Timeout(2):
        gevent.sleep(0)
        while not getattr(hub, "idle", True):
            gevent.sleep(0.001)


def sid() -> str:
    return secrets.token_urlsafe(16)


def records(first: int, n: int, terminal: bool = False) -> list:
    out = [(first + i, "delta", {"content": f"t{first + i} "}) for i in range(n)]
    if terminal:
        out.append((first + n, *DONE))
    return out


def test_read_returns_records_after_an_id_in_batches(hub) -> None:
    stream = sid()
    hub.open(stream, "alice")
    hub.append(stream, records(0, 10))
    # A Redis hub's reader sees what its flusher has written: wait for it (a loaded CI).
    assert [r[0] for r in hub.read(stream, -1, 2.0, 100)] == list(range(10))
    assert [r[0] for r in hub.read(stream, 6, 0.1, 100)] == [7, 8, 9]
    assert [r[0] for r in hub.read(stream, -1, 0.1, 4)] == [0, 1, 2, 3]
    assert hub.read(stream, 9, 0.05, 100) == []
    assert hub.read(stream, 2, 0.1, 1) == [(3, "delta", {"content": "t3 "})]
    assert hub.owner(stream) == "alice"
    assert hub.state(stream) == "live"


def test_read_waits_for_the_next_append(hub) -> None:
    stream = sid()
    hub.open(stream, None)
    hub.append(stream, records(0, 1))
    later = gevent.spawn_later(0.1, hub.append, stream, records(1, 1, terminal=True))
    got = hub.read(stream, 0, 2.0, 100)
    later.join()
    assert [r[0] for r in got] in ([1], [1, 2])
    assert hub.state(stream) == "finished"


def test_unknown_stream_is_not_found(hub) -> None:
    for call in (lambda: hub.owner("nope"), lambda: hub.state("nope")):
        with pytest.raises(errors.StreamNotFound):
            call()


def test_trimmed_events_cannot_be_replayed(hub_config) -> None:
    hub = create({**hub_config, "RILL_STREAM_MAX_EVENTS": 10})
    stream = sid()
    hub.open(stream, None)
    for i in range(0, 1000, 100):
        hub.append(stream, records(i, 100))
    with pytest.raises(errors.EventsExpired):
        hub.read(stream, -1, 0.1, 10)
    assert hub.read(stream, 998, 0.1, 10)[0][0] == 999


def test_finished_streams_expire_after_the_ttl(hub_config) -> None:
    hub = create({**hub_config, "RILL_STREAM_TTL_SECONDS": 1})
    stream = sid()
    hub.open(stream, None)
    hub.append(stream, records(0, 2, terminal=True))
    flushed(hub)
    assert hub.state(stream) == "finished"
    gevent.sleep(1.3)
    hub.open(sid(), None)  # the memory hub sweeps on open
    with pytest.raises(errors.StreamNotFound):
        hub.state(stream)


def test_append_if_next_adds_once(hub) -> None:
    stream = sid()
    hub.open(stream, None)
    hub.append(stream, records(0, 3))
    lost = (3, "error", errors.ProducerLost().to_dict())
    hub.append_if_next(stream, lost)
    hub.append_if_next(stream, lost)
    hub.append_if_next(stream, (2, "error", {}))
    assert [r[0] for r in hub.read(stream, -1, 0.1, 100)] == [0, 1, 2, 3]
    assert hub.state(stream) == "finished"


def test_cancel_and_leave_signal_the_producer(hub) -> None:
    seen: list[str] = []
    hub.on_signal(seen.append)
    stream = sid()
    hub.open(stream, None)
    gevent.sleep(0.2)  # the Redis listener subscribes
    hub.join(stream, "a")
    hub.join(stream, "b")
    assert hub.subscribers(stream) == 2
    hub.leave(stream, "a")
    assert hub.subscribers(stream) == 1
    assert not hub.cancel_requested(stream)
    hub.request_cancel(stream)
    assert hub.cancel_requested(stream)
    deadline = gevent.Timeout(2)
    with deadline:
        while seen.count(stream) < 2:
            gevent.sleep(0.01)


def test_redis_stream_is_lost_once_its_workers_heartbeat_stops(redis_server) -> None:
    """Leases are per worker: another worker sees a stream ``lost`` only when the producing
    worker's heartbeat key is gone (3/4 of a lease after its last renewal)."""
    config = {**DEFAULTS, "RILL_REDIS_URL": redis_server.url,
              "RILL_PRODUCER_LEASE_SECONDS": 0.4}
    producing, other = create(config), create(config)
    stream = sid()
    producing.open(stream, None)
    producing.append(stream, records(0, 1))
    flushed(producing)
    gevent.sleep(0.6)  # past the lease: the heartbeat thread renewed it
    assert other.state(stream) == "live"
    producing.close()
    gevent.sleep(0.5)
    assert other.state(stream) == "lost"
    assert producing.state(stream) == "live"  # the producer itself knows better


def test_redis_down_is_hub_unavailable() -> None:
    from tests.conftest import _free_port

    hub = create({**DEFAULTS, "RILL_REDIS_URL": f"redis://127.0.0.1:{_free_port()}/0"})
    with pytest.raises(errors.HubUnavailable):
        hub.open(sid(), None)


# The producer and subscribers over the hub.

def start(hub, steps: list,
          limits: Limits | None = None) -> tuple[str, TaskProducer, FakeUpstream]:
    fake = FakeUpstream()
    stream = sid()
    hub.open(stream, None)
    upstream = FakeStream(fake, steps, "m")
    generation = Generation(hub, stream, {"stream_id": stream, "model": "m"},
                            limits or Limits(60, 60, 60))
    producer = TaskProducer(generation, upstream)
    hub.on_signal(lambda s: producer.signal() if s == stream else None)
    producer.start()
    return stream, producer, fake


def read_events(hub, stream: str, after: int = -1, **kwargs) -> list[Event | str]:
    body = subscribe(hub, stream, after, sid(), heartbeat=kwargs.pop("heartbeat", 0.3),
                     lease=0.6, batch=kwargs.pop("batch", 256), **kwargs)
    return list(parse(body))


def tokens(n: int, pause: float = 0.0) -> Iterator:
    for i in range(n):
        yield ("delta", {"content": f"w{i} "})
        if pause:
            yield pause


def test_subscribers_see_identical_sequences_and_resume_exactly(hub) -> None:
    stream, producer, fake = start(hub, [*tokens(20, 0.01), DONE])
    first, second = gevent.spawn(read_events, hub, stream), gevent.spawn(read_events, hub,
                                                                           stream)
    gevent.joinall([first, second], raise_error=True)
    a, b = events_only(first.value), events_only(second.value)
    assert [(e.id, e.event, e.data) for e in a] == [(e.id, e.event, e.data) for e in b]
    assert text_of(a) == "".join(f"w{i} " for i in range(20))
    for cut in range(len(a)):
        resumed = events_only(read_events(hub, stream, after=int(a[cut].id)))
        assert [e.id for e in a[: cut + 1] + resumed] == [e.id for e in a]
    assert events_only(read_events(hub, stream, after=int(a[-1].id))) == []


def test_replay_goes_out_in_bounded_batches(hub) -> None:
    stream, producer, _ = start(hub, [*tokens(50, 0.001), DONE])
    gevent.sleep(0.5)
    body = subscribe(hub, stream, -1, "s", heartbeat=1, lease=0.6, batch=8)
    writes = list(body)
    assert max(w.count(b"\nevent: ") + w.startswith(b"event: ") for w in writes) <= 8
    assert len(events_only(parse(writes))) > 8


def test_a_long_replay_lets_other_greenlets_run_between_batches(hub) -> None:
    """A replay never waited on the hub, so it ran to its end without yielding: heartbeats
    and gunicorn's worker heartbeat starved meanwhile."""
    stream = sid()
    hub.open(stream, None)
    hub.append(stream, records(0, 1000, terminal=True))
    ticks = []

    def tick() -> None:
        while True:
            ticks.append(1)
            gevent.sleep(0)

    ticker = gevent.spawn(tick)
    gevent.sleep(0)
    ticks.clear()
    writes = list(subscribe(hub, stream, -1, "s", heartbeat=1, lease=0.6, batch=100))
    ticker.kill()
    assert len(writes) == 11
    assert len(ticks) >= 9


def test_cancel_closes_the_upstream_and_ends_with_cancelled(hub) -> None:
    stream, producer, fake = start(hub, [*tokens(100, 0.05), DONE])
    gevent.spawn_later(0.3, hub.request_cancel, stream)
    events = events_only(read_events(hub, stream))
    assert events[-1].json == {"finish_reason": "cancelled", "usage": None}
    assert 0 < len(text_of(events)) < len("".join(f"w{i} " for i in range(100)))
    gevent.sleep(0.05)
    assert fake.closed == 1


def test_orphaned_generation_is_cancelled_after_the_grace(hub) -> None:
    stream, producer, fake = start(hub, [*tokens(100, 0.05), DONE], Limits(60, 60, 0.4))
    hub.join(stream, "client")
    gevent.sleep(0.3)
    hub.leave(stream, "client")  # the client goes and does not come back
    gevent.sleep(1.0)
    assert producer.finished
    assert fake.closed == 1
    events = events_only(read_events(hub, stream))
    assert events[-1].json["finish_reason"] == "cancelled"


def test_a_resumed_generation_is_not_cancelled(hub) -> None:
    stream, producer, fake = start(hub, [*tokens(20, 0.05), DONE], Limits(60, 60, 0.4))
    gevent.sleep(0.2)
    events = events_only(read_events(hub, stream))
    assert events[-1].json["finish_reason"] == "stop"


def test_stall_and_timeout_end_the_generation(hub) -> None:
    stream, producer, fake = start(hub, [*tokens(2), 30, DONE], Limits(0.2, 60, 60))
    assert events_only(read_events(hub, stream))[-1].json["code"] == "upstream_stalled"
    stream, producer, fake = start(hub, [*tokens(100, 0.05)], Limits(60, 0.3, 60))
    assert events_only(read_events(hub, stream))[-1].json["code"] == "timeout"


def test_shutdown_stop_ends_with_a_shutdown_error(hub) -> None:
    stream, producer, fake = start(hub, [*tokens(100, 0.05), DONE])
    gevent.spawn_later(0.2, producer.stop, errors.Shutdown())
    events = events_only(read_events(hub, stream))
    assert events[-1].json["code"] == "shutdown"


def test_redis_subscriber_reports_a_lost_producer(redis_server) -> None:
    config = {**DEFAULTS, "RILL_REDIS_URL": redis_server.url,
              "RILL_PRODUCER_LEASE_SECONDS": 0.6}
    hub, elsewhere = create(config), create(config)
    stream, producer, fake = start(hub, [*tokens(100, 0.05), DONE], Limits(60, 60, 60))
    gevent.sleep(0.2)
    # A dead worker renews nothing and writes nothing more.
    gevent.killall([producer._supervisor._greenlet, producer._reader._greenlet])
    hub.close()
    items = read_events(elsewhere, stream)
    events = events_only(items)
    assert events[-1].json["code"] == "producer_lost"
    assert [e.id for e in events] == [str(i) for i in range(len(events))]
    again = events_only(read_events(elsewhere, stream))
    assert [e.data for e in again] == [e.data for e in events]
    elsewhere.close()


def test_hub_failure_mid_stream_is_an_error_event_without_id(redis_server) -> None:
    hub = create({**DEFAULTS, "RILL_REDIS_URL": redis_server.url})
    stream, producer, fake = start(hub, [*tokens(100, 0.05), DONE])
    gevent.sleep(0.2)

    def broken(*args, **kwargs):
        raise errors.HubUnavailable()

    hub.read = broken  # type: ignore[method-assign]
    items = read_events(hub, stream)
    assert items[-1].event == "error" and items[-1].id is None
    assert items[-1].json["code"] == "hub_unavailable"
    producer.stop()


def test_a_stream_finishing_between_an_empty_read_and_the_state_check_still_sends_its_end(
        hub) -> None:
    """A subscriber's read can time out just as the terminal event lands; the state check
    then says ``finished``, and the terminal must still go out (seen under load: 3% of
    8,000 streams ended without ``done``)."""
    stream = sid()
    hub.open(stream, None)
    hub.append(stream, records(0, 2))
    flushed(hub)
    real_read, calls = hub.read, []

    def read(stream_id: str, after: int, timeout: float, count: int) -> list:
        if not calls:
            calls.append(after)
            hub.append(stream, [(2, *DONE)])
            flushed(hub)
            return []
        return real_read(stream_id, after, timeout, count)

    hub.read = read  # type: ignore[method-assign]
    events = events_only(read_events(hub, stream, after=1))
    assert [(e.id, e.event) for e in events] == [("2", "done")]


def test_redis_a_worker_key_gone_for_a_moment_is_not_a_lost_producer(redis_server) -> None:
    """An evicted (or late) heartbeat key is back a renewal later: a subscriber confirms
    before it reports ``producer_lost``, so a live producer never gets one."""
    from rill.hub.redis_io import worker_key

    config = {**DEFAULTS, "RILL_REDIS_URL": redis_server.url,
              "RILL_PRODUCER_LEASE_SECONDS": 6.0}  # renewed every 1 s, for 3 s
    producing, other = create(config), create(config)
    stream = sid()
    producing.open(stream, None)
    producing.append(stream, records(0, 1))
    flushed(producing)
    key = worker_key(producing.worker)  # type: ignore[attr-defined]
    while not producing._heartbeat.beats:  # type: ignore[attr-defined]
        gevent.sleep(0.01)
    producing.redis.delete(key)  # type: ignore[attr-defined]
    gevent.spawn_later(0.05, producing.redis.set, key, 1)  # type: ignore[attr-defined]
    assert other.state(stream) == "live"
    producing.close()  # now the worker is gone
    gevent.sleep(1.2)  # a renewal already under way has landed
    other.redis.delete(key)  # type: ignore[attr-defined]
    with gevent.Timeout(5):
        assert other.state(stream) == "lost"  # gone, and still gone a renewal later
    other.close()


def test_redis_a_follower_that_always_has_data_stays_present(redis_server) -> None:
    """A subscriber on another worker renews its presence while events flow, not only when
    idle: else, past its presence, the producer counts it gone and cancels a watched stream."""
    config = {**DEFAULTS, "RILL_REDIS_URL": redis_server.url, "RILL_HEARTBEAT_SECONDS": 0.3,
              "RILL_PRODUCER_LEASE_SECONDS": 0.6}  # presence: 2 x 0.6 + 1 = 2.2 s
    producing, elsewhere = create(config), create(config)
    stream, producer, fake = start(producing, [*tokens(100, 0.05), DONE],
                                   Limits(60, 60, 0.1))  # orphaned after 0.1 s

    def another_tab_comes_and_goes() -> None:  # its leave makes the producer count again
        elsewhere.join(stream, "another")
        gevent.sleep(0.1)
        elsewhere.leave(stream, "another")

    gevent.spawn_later(3.5, another_tab_comes_and_goes)
    flushed(producing)  # the stream reaches Redis before another worker looks for it
    events = events_only(read_events(elsewhere, stream))  # always data: never idle
    assert events[-1].json["finish_reason"] == "stop"  # not cancelled at STARTUP_SECONDS
    producing.close()
    elsewhere.close()


def test_redis_flushes_go_on_while_requests_hold_every_pooled_connection(redis_server) -> None:
    """Flushes went through the request pool: under a burst, requests waiting for it (remote
    reads, stream caps) held every connection, the flush waited past the pool's timeout, and
    healthy streams ended in hub_unavailable (719 of 8,000 in bench's `held`). The flusher
    has a connection of its own now."""
    import redis

    from rill.hub.redis_io import events_key

    config = {**DEFAULTS, "RILL_REDIS_URL": redis_server.url,
              "RILL_REDIS_TIMEOUT_SECONDS": 0.5}
    hub = create(config)
    stream = sid()
    hub.open(stream, None)
    pool = hub.redis.connection_pool  # type: ignore[attr-defined]
    import inspect

    args = () if "command_name" not in inspect.signature(pool.get_connection).parameters \
        or inspect.signature(pool.get_connection).parameters["command_name"].default \
        is not inspect.Parameter.empty else ("PING",)  # redis-py 5.0 wants a command name
    taken = [pool.get_connection(*args) for _ in range(pool.max_connections)]
    try:
        hub.append(stream, records(0, 3))
        flushed(hub)
        assert hub.healthy  # type: ignore[attr-defined]
        assert redis.Redis.from_url(redis_server.url).xlen(events_key(stream)) == 1
    finally:
        for connection in taken:
            pool.release(connection)
        hub.close()


@pytest.fixture(params=["redis_server", "redis_cluster"])
def redis_nodes(request) -> tuple[str, list[int]]:
    """A real Redis, or a real Redis Cluster: its URL and every node's port."""
    server = request.getfixturevalue(request.param)
    return server.url, list(getattr(server, "ports", None) or [server.port])


def test_redis_one_flush_fails_only_the_stream_redis_refused(redis_nodes) -> None:
    """A flush writes many streams at once; when Redis refuses one stream's entry (a
    subscriber elsewhere wrote ``producer_lost`` at its next id), that stream ends with
    ``hub_unavailable`` and the others in the same flush are written."""
    url, _ = redis_nodes
    hub = create({**DEFAULTS, "RILL_REDIS_URL": url})
    elsewhere = create({**DEFAULTS, "RILL_REDIS_URL": url})
    streams = [sid() for _ in range(5)]
    for stream in streams:
        hub.open(stream, None)
        hub.append(stream, records(0, 3))
    flushed(hub)
    refused = streams[2]
    elsewhere.append_if_next(refused, (3, "error", errors.ProducerLost().to_dict()))
    for stream in streams:
        hub.append(stream, records(3, 1))
    flushed(hub)
    try:
        for stream in streams:
            if stream == refused:
                with pytest.raises(errors.HubUnavailable):
                    hub.read(stream, 2, 0.1, 100)
                assert elsewhere.read(stream, 2, 0.1, 100)[0][2]["code"] == "producer_lost"
            else:
                assert [r[0] for r in hub.read(stream, 2, 0.1, 100)] == [3]
                assert [r[0] for r in elsewhere.read(stream, -1, 0.1, 100)] == [0, 1, 2, 3]
    finally:
        hub.close()  # type: ignore[attr-defined]
        elsewhere.close()  # type: ignore[attr-defined]


def test_redis_heartbeat_beats_in_a_gevent_script_whose_first_hub_it_would_make(
        redis_server) -> None:
    """A monkey-patched process whose first stream opens before any gevent hub exists (a
    script, a host app's job runner): the heartbeat's native thread made the first hub,
    whose settings import a module under a gevent lock that needs a hub, and recursed; the
    lease was never renewed, so every stream of that process was reported lost."""
    import subprocess
    import sys

    script = """from gevent import monkey; monkey.patch_all()
import sys, time
from rill.config import DEFAULTS
from rill.hub import create
hub = create({**DEFAULTS, "RILL_REDIS_URL": sys.argv[1]})
hub.open("s", None)
deadline = time.monotonic() + 10
while not hub._heartbeat.beats and time.monotonic() < deadline:
    time.sleep(0.01)
print("beats", hub._heartbeat.beats)
hub.close()
"""
    done = subprocess.run([sys.executable, "-c", script, redis_server.url], timeout=60,
                          capture_output=True, text=True, check=False)
    assert done.stdout.split() == ["beats", "1"], done.stderr[-2000:]
    assert "heartbeat failed" not in done.stderr


def test_redis_flushes_go_on_after_redis_closes_the_flushers_connection(redis_server) -> None:
    """The flusher holds its connection; Redis closing it (a restart, its idle ``timeout``)
    must not end the streams of the next flush with ``hub_unavailable``."""
    import redis

    hub = create({**DEFAULTS, "RILL_REDIS_URL": redis_server.url})
    stream = sid()
    hub.open(stream, None)
    hub.append(stream, records(0, 2))
    flushed(hub)
    try:
        with redis.Redis.from_url(redis_server.url) as admin:
            assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
        hub.append(stream, records(2, 2, terminal=True))
        flushed(hub)
        assert [r[0] for r in hub.read(stream, -1, 0.1, 100)] == [0, 1, 2, 3, 4]
        assert hub.healthy  # type: ignore[attr-defined]
    finally:
        hub.close()  # type: ignore[attr-defined]
