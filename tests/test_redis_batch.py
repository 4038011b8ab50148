"""Batcher: commands and script calls from many greenlets share pipelined round trips
(rill.hub.redis_batch), against a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import gevent
import pytest
import redis

from rill import tasks
from rill.hub.redis_batch import Batcher
from rill.hub.redis_io import HeldConnection, disconnect

ECHO = """if ARGV[1] == 'bad' then return redis.error_reply('refused') end
return tonumber(ARGV[1])"""


@pytest.fixture
def batcher(redis_server, monkeypatch) -> Iterator[Batcher]:
    monkeypatch.setattr(tasks, "cooperative", lambda: True)  # as in a gevent worker
    rounds: list[int] = []
    round_trip = HeldConnection.round_trip

    def counted(self, commands, **options):
        rounds.append(len(commands))
        return round_trip(self, commands, **options)

    monkeypatch.setattr(HeldConnection, "round_trip", counted)
    batcher = Batcher(redis.Redis.from_url(redis_server.url), timeout=5)
    batcher.rounds = rounds  # type: ignore[attr-defined]
    yield batcher
    disconnect(batcher.client)


def test_the_calls_of_one_turn_share_a_round_trip_and_each_gets_its_reply(batcher) -> None:
    script = batcher.client.register_script(ECHO)
    batcher.client.script_load(ECHO)
    calls = [gevent.spawn(batcher.call, script, ["k"], [n]) for n in range(50)]
    gevent.joinall(calls, raise_error=True)
    assert [c.value for c in calls] == list(range(50))
    assert batcher.rounds == [50]  # type: ignore[attr-defined]


def test_a_falsy_reply_is_a_reply_not_a_timeout(batcher) -> None:
    """AsyncResult.wait returns the value: a 0 (a cap reached) read as "no reply"."""
    assert batcher.call(batcher.client.register_script(ECHO), ["k"], [0]) == 0


def test_an_error_reply_is_raised_in_its_own_caller_only(batcher) -> None:
    script = batcher.client.register_script(ECHO)
    good, bad = (gevent.spawn(batcher.call, script, ["k"], [v]) for v in (7, "bad"))
    gevent.joinall([good, bad])
    assert good.value == 7
    assert isinstance(bad.exception, redis.ResponseError)


def test_a_script_redis_lost_is_loaded_again(batcher) -> None:
    script = batcher.client.register_script(ECHO)
    assert batcher.call(script, ["k"], [1]) == 1
    batcher.client.script_flush()
    assert batcher.call(script, ["k"], [2]) == 2


def test_redis_away_fails_every_call_of_the_batch(batcher) -> None:
    script = batcher.client.register_script(ECHO)
    batcher = Batcher(redis.Redis(port=1, socket_connect_timeout=0.5), timeout=5)
    calls = [gevent.spawn(batcher.call, script, ["k"], [n]) for n in range(3)]
    gevent.joinall(calls)
    assert all(isinstance(c.exception, redis.ConnectionError) for c in calls)


def test_a_connection_redis_closed_is_made_again(batcher, redis_server) -> None:
    """The batcher holds one connection; Redis closing it (a restart, its idle ``timeout``)
    must not fail the next calls."""
    script = batcher.client.register_script(ECHO)
    assert batcher.call(script, ["k"], [1]) == 1
    with redis.Redis.from_url(redis_server.url) as admin:
        assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    assert batcher.call(script, ["k"], [2]) == 2


def test_the_held_connection_closes_with_its_client(batcher) -> None:
    """The pool makes the held connection but does not keep it: closing the client must
    close it too (it was left to the garbage collector: a descriptor per hub closed)."""
    script = batcher.client.register_script(ECHO)
    assert batcher.call(script, ["k"], [1]) == 1
    sock = batcher._held._connection._sock
    assert sock.fileno() != -1
    disconnect(batcher.client)
    assert sock.fileno() == -1
    assert batcher.call(script, ["k"], [2]) == 2  # a new one, on next use
