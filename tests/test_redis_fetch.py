"""Subscribers on another worker: one fetch per flush notice, shared by all of them.

Against a real redis-server, and a real Redis Cluster, on free loopback ports.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import gevent
import gevent.event
import pytest

from rill.config import DEFAULTS
from rill.hub import create, redis_fetch
from rill.hub.memory import Stream
from rill.hub.redis_fetch import extend
from rill.hub.redis_io import ERRORS, notice_channel
from tests.test_hub import flushed, records

READ_TIMEOUT = 30.0  # longer than the test: a record read came from a fetch, not a timeout


@pytest.fixture(params=["redis_server", "redis_cluster"])
def two_workers(request) -> Any:
    """A hub that produces and a hub of another worker, on one Redis or one cluster."""
    url = request.getfixturevalue(request.param).url
    producing, elsewhere = (create({**DEFAULTS, "RILL_REDIS_URL": url}) for _ in range(2))
    yield producing, elsewhere
    producing.close()
    elsewhere.close()


def started(producing: Any, count: int) -> str:
    """A new stream of ``producing`` with records 0..count-1 in Redis."""
    stream = secrets.token_urlsafe(16)
    producing.open(stream, None)
    producing.append(stream, records(0, count))
    flushed(producing)
    return stream


def follow(hub: Any, stream: str, name: str, got: list[int]) -> gevent.Greenlet:
    def run() -> None:
        hub.join(stream, name)
        after = -1
        while True:
            batch = hub.read(stream, after, READ_TIMEOUT, 256)
            got.extend(r[0] for r in batch)
            after = batch[-1][0] if batch else after
            if batch and batch[-1][1] == "done":
                return

    return gevent.spawn(run)


def counting(hub: Any, name: str) -> list[int]:
    calls: list[int] = []
    method = getattr(hub, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return method(*args, **kwargs)

    setattr(hub, name, counted)
    return calls


def test_subscribers_elsewhere_share_one_fetch_per_flush(two_workers, monkeypatch) -> None:
    """Three tabs on another worker follow one stream: each flush there is one ``XRANGE``
    for all of them (the fetcher's), none of their own, and each sees every record once."""
    producing, elsewhere = two_workers
    stream = started(producing, 2)
    listening = gevent.event.Event()  # the listener's subscription to the notices is live
    on_message = elsewhere.listener._on_message

    def seen(message: dict[str, Any]) -> None:
        on_message(message)
        if message["type"] == "subscribe" and message["channel"] == notice_channel(
                producing.worker).encode():
            listening.set()  # (its confirmation wakes every follower: they read Redis)

    elsewhere.listener._on_message = seen
    got: list[list[int]] = [[], [], []]
    tabs = [follow(elsewhere, stream, f"tab{i}", got[i]) for i in range(3)]
    with gevent.Timeout(10):
        listening.wait()
        while any(len(g) < 2 for g in got):  # caught up: from Redis, once each
            gevent.sleep(0.01)
        gevent.sleep(0.05)
    ranges: list[int] = []
    range_records = redis_fetch.range_records
    monkeypatch.setattr(redis_fetch, "range_records",  # looked up at each call
                        lambda *a, **k: ranges.append(1) or range_records(*a, **k))
    fetches = counting(elsewhere.fetcher, "_fetch")
    with gevent.Timeout(10):
        for first in range(2, 12, 2):
            producing.append(stream, records(first, 2, terminal=first == 10))
            flushed(producing)
            while any(len(g) < first + 2 for g in got):
                gevent.sleep(0.001)
        gevent.joinall(tabs, raise_error=True)
    assert got == [list(range(13))] * 3
    assert ranges == []  # every record after the catch-up came from the shared copy
    assert 5 <= len(fetches) <= 6  # one per flush (a notice may name a stream twice)


def test_a_failed_fetch_leaves_the_subscribers_to_read_redis_themselves(two_workers) -> None:
    """When the fetch fails the subscribers it would have fed are woken and read Redis
    themselves: they get every record, and Redis's errors are theirs to report."""
    import redis

    producing, elsewhere = two_workers

    def fails(batch: Any) -> None:
        raise redis.ConnectionError("no")

    assert redis.ConnectionError in ERRORS
    elsewhere.fetcher._fetch = fails
    stream = started(producing, 1)
    got: list[int] = []
    tab = follow(elsewhere, stream, "tab", got)
    with gevent.Timeout(10):
        for first in range(1, 9, 2):
            producing.append(stream, records(first, 2, terminal=first == 7))
            flushed(producing)
        tab.get()
    assert got == list(range(10))


def copy_of(*ids: int) -> Stream:
    copy = Stream(None, gevent.event.Event)
    extend(copy, [(i, "delta", {}) for i in ids], 100)
    return copy


def test_the_copy_keeps_the_newest_contiguous_records() -> None:
    copy = copy_of(0, 1, 2)
    extend(copy, [(1, "delta", {}), (2, "delta", {}), (3, "delta", {})], 100)  # overlaps
    assert [r[0] for r in copy.records] == [0, 1, 2, 3] and copy.first_id == 0
    extend(copy, [(7, "delta", {}), (8, "done", {})], 100)  # a gap: starts again there
    assert [r[0] for r in copy.records] == [7, 8] and copy.first_id == 7
    assert copy.finished and copy.end == copy.durable_end == 9
    copy = copy_of(*range(10))
    extend(copy, [(i, "delta", {}) for i in range(10, 15)], 8)  # RILL_STREAM_MAX_EVENTS
    assert [r[0] for r in copy.records] == list(range(7, 15)) and copy.first_id == 7


def test_records_after_a_terminal_one_are_not_read() -> None:
    """A flush of several records whose first id a subscriber elsewhere took for
    ``producer_lost`` is still written (its entry id is past the error's): readers stop at
    the terminal record, never reading the flush's records after it."""
    import orjson

    from rill.hub.redis_fetch import entries_records

    reply = [(b"0-3", {b"d": orjson.dumps([[1, "delta", {}], [2, "delta", {}]])}),
             (b"0-4", {b"d": orjson.dumps([[3, "error", {"code": "producer_lost"}]])}),
             (b"0-6", {b"d": orjson.dumps([[3, "delta", {}], [4, "delta", {}],
                                            [5, "done", {}]])})]
    assert [(r[0], r[1]) for r in entries_records(reply, 1)] == [(2, "delta"), (3, "error")]
    assert [r[1] for r in entries_records([[b"0-6", [b"d", reply[2][1][b"d"]]]])] == [
        "delta", "delta", "done"]


def test_flushes_name_only_streams_followed_elsewhere(redis_server) -> None:
    """A flush's notice names the streams a worker elsewhere follows, nothing else (no
    ``PUBLISH`` at all without one); a new follower's join gets a notice at once, so what
    was flushed before its signal reached the producer is fetched too."""
    import redis

    producing, elsewhere = (create({**DEFAULTS, "RILL_REDIS_URL": redis_server.url})
                            for _ in range(2))
    followed, alone = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    for stream in (followed, alone):
        producing.open(stream, None)
    listener = redis.Redis.from_url(redis_server.url).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(notice_channel(producing.worker))

    def notices(seconds: float = 0.5) -> list[str]:
        got, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = listener.get_message(timeout=0)
            if message is None:
                gevent.sleep(0.01)  # the hubs' greenlets run meanwhile
            else:
                got.append(message["data"].decode())
        return got

    try:
        for stream in (followed, alone):
            producing.append(stream, records(0, 2))
        flushed(producing)
        assert notices() == []  # nobody elsewhere follows either
        elsewhere.join(followed, "tab")
        assert notices() == [followed]  # the join's own notice
        for stream in (followed, alone):
            producing.append(stream, records(2, 1))
        flushed(producing)
        assert notices() == [followed]
    finally:
        listener.close()
        producing.close()
        elsewhere.close()


def test_a_look_without_waiting_reads_redis_past_the_copy(two_workers) -> None:
    """A subscriber elsewhere at the end of its worker's copy, when another one has written
    ``producer_lost`` (in Redis, with no notice: the producer is gone): a read that does not
    wait (the relay's last look once the stream is finished) must still find it, or the
    answer ends with no terminal event."""
    from rill import errors

    producing, elsewhere = two_workers
    stream = started(producing, 3)
    got: list[int] = []
    tab = follow(elsewhere, stream, "tab", got)
    with gevent.Timeout(10):
        while len(got) < 3:
            gevent.sleep(0.01)
    tab.kill()
    create({**DEFAULTS, "RILL_REDIS_URL": producing.url}).append_if_next(
        stream, (3, "error", errors.ProducerLost().to_dict()))
    assert [(r[0], r[1]) for r in elsewhere.read(stream, 2, 0, 100)] == [(3, "error")]
