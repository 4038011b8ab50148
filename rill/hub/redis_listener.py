"""The Redis hub's one pub/sub connection per worker, its messages fanned out locally."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from .. import tasks
from .memory import MemoryHub, Stream
from .redis_io import ERRORS, SIGNAL_CHANNEL, meta_key, notice_channel, subs_key

log = logging.getLogger(__name__)


class Listener:
    """One pub/sub connection per worker, its messages fanned out here.

    On ``rill:signal``: ``c <id>`` (cancel), ``j <id> <subscriber> <lapses>`` (a subscriber
    elsewhere joined or renewed), ``l <id> <subscriber>`` (it left), acted on for streams
    produced here (a new follower's ``j`` gets a notice naming its stream at once). On
    ``rill:notice:<worker>``: the ids of followed streams a worker just flushed, whose new
    records the hub's :class:`~rill.hub.redis_fetch.Fetcher` then reads for the subscribers
    here that follow those streams. After a reconnect it reloads what a lost
    message could have said (cancel flags, remote subscribers) and wakes every follower.
    """

    def __init__(self, hub: Any, local: MemoryHub) -> None:
        self.hub, self.local = hub, local
        self.follows: dict[str, tuple[str, Stream, set[str]]] = {}  # stream: worker, …
        self.channels: dict[str, int] = {}  # notice channel: streams followed on it
        self._pubsub: Any = None
        self._task: tasks.Task | None = None
        self._stopped = False

    def start(self) -> None:
        if self._task is None or self._task.dead:
            self._task = tasks.spawn(self._run)

    def follow(self, stream_id: str, worker: str, subscriber: str) -> Stream:
        """Wake the returned stream's ``changed`` whenever ``worker`` flushes ``stream_id``."""
        self.start()
        entry = self.follows.get(stream_id)
        if entry is None:
            entry = self.follows[stream_id] = (worker, Stream(None, self.local._event), set())
            channel = notice_channel(worker)
            self.channels[channel] = self.channels.get(channel, 0) + 1
            if self.channels[channel] == 1 and self._pubsub is not None:
                with contextlib.suppress(*ERRORS):
                    self._pubsub.subscribe(channel)
        entry[2].add(subscriber)
        return entry[1]

    def unfollow(self, stream_id: str, subscriber: str) -> None:
        entry = self.follows.get(stream_id)
        if entry is None:
            return
        entry[2].discard(subscriber)
        if entry[2]:
            return
        del self.follows[stream_id]
        channel = notice_channel(entry[0])
        self.channels[channel] -= 1
        if not self.channels[channel]:
            del self.channels[channel]
            if self._pubsub is not None:
                with contextlib.suppress(*ERRORS):
                    self._pubsub.unsubscribe(channel)

    def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.stop(unblock=self._close, timeout=1.0)
        self._close()

    def _close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def _run(self) -> None:
        while not self._stopped:
            try:
                pubsub = self.hub.signals.pubsub()
                pubsub.subscribe(SIGNAL_CHANNEL, *self.channels)
                self._pubsub = pubsub
                self._resync()
                for message in pubsub.listen():
                    self._on_message(message)
            except Exception as exc:
                self._pubsub = None
                if self._stopped:
                    return
                if not isinstance(exc, ERRORS):
                    log.exception("the Redis listener failed")
                tasks.sleep(1.0)  # Redis is away; flushes fail and say so meanwhile

    def _on_message(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        if message["type"] == "subscribe":  # now live: look again, in case one was missed
            for worker, stream, _ in list(self.follows.values()):
                if notice_channel(worker) == channel:
                    self.local.wake(stream)
            return
        if message["type"] != "message":
            return
        words = message["data"].decode().split()
        if channel != SIGNAL_CHANNEL:
            for stream_id in words:
                entry = self.follows.get(stream_id)
                if entry is not None:
                    self.hub.fetcher.mark(stream_id, entry[1])
            return
        produced = self.local.get(words[1]) if len(words) > 1 else None
        if produced is None or produced.finished:
            return
        if words[0] == "c":
            produced.cancel = True
        elif words[0] == "j" and len(words) == 4:
            if words[2] not in produced.remote and produced.sent_end:
                # A new follower: flushes name the stream from now on; this notice covers
                # what was flushed before they did, since its first look at Redis.
                tasks.spawn(lambda: self._notice(words[1]))
            produced.remote[words[2]] = float(words[3])
        elif words[0] == "l" and len(words) == 3:
            produced.remote.pop(words[2], None)
        self.local.signal(words[1])

    def _notice(self, stream_id: str) -> None:
        with contextlib.suppress(*ERRORS):
            self.hub.batch.run([], (notice_channel(self.hub.worker), stream_id))

    def _resync(self) -> None:
        """Reload cancel flags and remote subscribers of the live streams produced here."""
        live = [(k, s) for k, s in self.local.streams.items() if not s.finished]
        if live:
            pipe = self.hub.redis.pipeline(transaction=False)
            now = time.time()
            for stream_id, _ in live:
                pipe.hget(meta_key(stream_id), "cancel")
                pipe.zrangebyscore(subs_key(stream_id), now, "+inf", withscores=True)
            replies = pipe.execute()
            for i, (stream_id, stream) in enumerate(live):
                stream.cancel = stream.cancel or replies[2 * i] == b"1"
                stream.remote = {m.decode(): score for m, score in replies[2 * i + 1]}
                self.local.signal(stream_id)
        for _, stream, _ in list(self.follows.values()):
            self.local.wake(stream)
