"""Batches sent without waiting for earlier replies, against a real redis-server."""

from __future__ import annotations

from typing import Any

import gevent
import pytest
import redis

from rill.hub.redis_io import HeldConnection
from rill.hub.redis_pipeline import Pipeline


@pytest.fixture
def client(redis_server) -> Any:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    yield client
    client.connection_pool.disconnect()


def outcomes(pipeline: Pipeline, batches: list[list[tuple[Any, ...]]]) -> list[Any]:
    got: list[Any] = []
    for batch in batches:
        pipeline.send(batch, got.append)
    with gevent.Timeout(5):
        while pipeline.pending:
            gevent.sleep(0.001)
    return got


def test_batches_out_at_once_each_get_their_own_replies_in_order(client) -> None:
    pipeline = Pipeline(HeldConnection(client), depth=3)
    sent: list[int] = []
    real_send = pipeline.held.connection().send_packed_command

    def counting(*args: Any, **kwargs: Any) -> Any:
        sent.append(len(pipeline._out))  # batches out, unanswered, when this one goes
        return real_send(*args, **kwargs)

    pipeline.held.connection().send_packed_command = counting
    batches = [[("INCR", "n"), ("HSET", "n", "x", 1)] if i == 4 else [("INCR", "n")]
               for i in range(8)]
    got = outcomes(pipeline, batches)
    assert [g[0] for g in got] == list(range(1, 9))  # each batch its own, in order
    assert isinstance(got[4][1], redis.ResponseError)  # a refused command is its reply
    assert max(sent) == 2  # up to three out at once (depth), never a fourth


def test_a_connection_redis_closed_while_idle_is_made_again(client, redis_server) -> None:
    pipeline = Pipeline(HeldConnection(client))
    assert outcomes(pipeline, [[("PING",)]]) == [[b"PONG"]]
    with redis.Redis.from_url(redis_server.url) as admin:
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    assert outcomes(pipeline, [[("SET", "k", 1)], [("GET", "k")]]) == [[b"OK"], [b"1"]]


def test_redis_gone_gives_every_batch_out_the_error(client, redis_server) -> None:
    """No batch waits forever when Redis goes away: each gets the connection's error."""
    pipeline = Pipeline(HeldConnection(client))
    got: list[Any] = []
    for _ in range(3):
        pipeline.send([("BLPOP", "never", 0)], got.append)  # Redis holds the replies back
    gevent.sleep(0.1)
    with redis.Redis.from_url(redis_server.url) as admin:
        admin.client_kill_filter(_type="normal", skipme=True)
    with gevent.Timeout(5):
        while len(got) < 3:
            gevent.sleep(0.01)
    assert not pipeline.pending
    # Killed before any reply: sent again once on a new connection, where the replies do
    # not come either, so each batch ends with the reply timeout's error.
    assert all(isinstance(g, (redis.ConnectionError, redis.TimeoutError)) for g in got), got


def test_flushes_out_at_once_write_each_record_once(redis_server) -> None:
    """The flusher sends a stream's next flush before the last one's reply came: each must
    carry only its own records (a reply must not move the stream's sent mark back)."""
    from rill.config import DEFAULTS
    from rill.hub import create
    from rill.hub.redis_fetch import entries_records
    from rill.hub.redis_io import events_key
    from tests.test_hub import flushed, records

    hub = create({**DEFAULTS, "RILL_REDIS_URL": redis_server.url})
    stream = "s" + redis_server.url[-5:]
    hub.open(stream, None)
    hub.append(stream, records(0, 1))
    flushed(hub)
    connection = hub.flusher._held.connection()
    read = connection.read_response
    out: list[int] = []

    def slow_read(*args: Any, **kwargs: Any) -> Any:
        out.append(len(hub.flusher._pipeline._out))
        gevent.sleep(0.02)  # a busy worker reads the reply late
        return read(*args, **kwargs)

    connection.read_response = slow_read
    try:
        for first in range(1, 30):
            hub.append(stream, records(first, 1, terminal=first == 29))
            gevent.sleep(0.006)  # past the flush interval: the next flush goes now
        flushed(hub)
        assert max(out) > 1  # flushes were out at once
        reply = redis.Redis.from_url(redis_server.url).xrange(events_key(stream))
        assert [r[0] for r in entries_records(reply)] == list(range(31))
    finally:
        hub.close()


def test_records_after_a_terminal_one_are_not_read() -> None:
    """A flush already out when a subscriber elsewhere wrote ``producer_lost`` lands after
    it; readers stop at the terminal record."""
    import orjson

    from rill.hub.redis_fetch import entries_records

    reply = [(b"0-3", {b"d": orjson.dumps([[1, "delta", {}], [2, "delta", {}]])}),
             (b"0-4", {b"d": orjson.dumps([[3, "error", {"code": "producer_lost"}]])}),
             (b"0-6", {b"d": orjson.dumps([[4, "delta", {}], [5, "done", {}]])})]
    assert [r[0] for r in entries_records(reply, 1)] == [2, 3]
    assert [r[1] for r in entries_records([[b"0-6", [b"d", reply[2][1][b"d"]]]])] == [
        "delta", "done"]
