"""The stream hub: where a generation's events live, apart from any HTTP connection.

A generation (:class:`rill.generation.Generation`) appends numbered events; subscribers (HTTP
connections, :func:`rill.relay.subscribe`) read them from any id at their own pace, so a
reconnect resumes with ``Last-Event-ID`` and several tabs see one sequence. Two backends
share this interface: :class:`~rill.hub.memory.MemoryHub` (one worker) and
:class:`~rill.hub.redis_hub.RedisHub` (Redis Streams; any worker or instance).

A record is ``(id, event, payload)``: ids count from 0 (``start``) and the last record of a
stream is ``done`` or ``error``. Backends raise :class:`~rill.errors.StreamNotFound`,
:class:`~rill.errors.EventsExpired` and :class:`~rill.errors.HubUnavailable`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

Record = tuple[int, str, dict[str, Any]]
State = Literal["live", "finished", "lost"]
TERMINAL = frozenset({"done", "error"})


class Hub(Protocol):
    """What producers and subscribers need of a hub. The producer's calls (``append``,
    ``cancel_requested``, ``subscribers``) answer from this worker's memory and never wait,
    so a producer may make them from an event-loop callback; every cancel and leave that
    concerns a producer here arrives as a signal (``on_signal``)."""

    def open(self, stream_id: str, owner: str | None) -> None:
        """Create a stream produced by this worker."""

    def append(self, stream_id: str, records: list[Record]) -> None:
        """Add records (ids consecutive); a terminal record finishes the stream. Records
        become readable once durable (at once in memory; once in Redis with Redis)."""

    def read(self, stream_id: str, after: int, timeout: float, count: int) -> list[Record]:
        """Return up to ``count`` records with id > ``after``, waiting up to ``timeout`` s."""

    def state(self, stream_id: str) -> State:
        """``live``, ``finished``, or ``lost`` (live, but its producer's worker is gone)."""

    def owner(self, stream_id: str) -> str | None:
        """Return the owner; raises StreamNotFound for an unknown or expired stream."""

    def request_cancel(self, stream_id: str) -> None:
        """Ask the stream's producer, wherever it runs, to cancel it."""

    def cancel_requested(self, stream_id: str) -> bool:
        """Raises :class:`~rill.errors.HubUnavailable` once the hub lost the stream."""

    def join(self, stream_id: str, subscriber: str) -> None:
        """Mark ``subscriber`` present (renew it at least every lease period)."""

    def leave(self, stream_id: str, subscriber: str) -> None: ...

    def subscribers(self, stream_id: str) -> int: ...

    def on_signal(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(stream_id)`` when a cancel or a leave may concern a producer here."""

    def append_if_next(self, stream_id: str, record: Record) -> None:
        """Append ``record`` only if its id is the next one (no-op if someone did first)."""

    def reachable(self) -> bool:
        """Whether the hub's store answers (readiness; cached, never waits long)."""


def create(config: Mapping[str, Any]) -> Hub:
    """Build the hub the config asks for: Redis when ``RILL_REDIS_URL`` is set, else memory.

    Raises ``ValueError`` when ``RILL_REDIS_URL`` is set and the ``redis`` extra is missing.
    """
    if config["RILL_REDIS_URL"]:
        try:
            import redis  # noqa: F401
        except ImportError:
            raise ValueError("RILL_REDIS_URL needs redis-py: pip install 'rill[redis]'") from None
        from .redis_hub import RedisHub

        return RedisHub(config)
    from .memory import MemoryHub

    return MemoryHub(config)
