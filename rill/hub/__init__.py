"""The stream hub: where a generation's events live, apart from any HTTP connection.

A producer (:class:`rill.generation.Producer`) appends numbered events; subscribers (HTTP
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
    appends_in_place: bool  # True if append never blocks or switches greenlets
    # True if a producer holds a lease it renews every lease/3 s, polling the hub for
    # cancels then too; False if every cancel and leave arrives as a signal (on_signal).
    leased: bool

    def open(self, stream_id: str, owner: str | None) -> None:
        """Create a stream and take the producer's lease on it."""

    def append(self, stream_id: str, records: list[Record]) -> None:
        """Add records (ids consecutive); a terminal record finishes the stream."""

    def read(self, stream_id: str, after: int, timeout: float, count: int) -> list[Record]:
        """Return up to ``count`` records with id > ``after``, waiting up to ``timeout`` s."""

    def state(self, stream_id: str) -> State:
        """``live``, ``finished``, or ``lost`` (live, but its producer's lease ran out)."""

    def owner(self, stream_id: str) -> str | None:
        """Return the owner; raises StreamNotFound for an unknown or expired stream."""

    def renew(self, stream_ids: list[str]) -> None:
        """Renew the producer's lease on these live streams."""

    def request_cancel(self, stream_id: str) -> None:
        """Ask the stream's producer, wherever it runs, to cancel it."""

    def cancel_requested(self, stream_id: str) -> bool: ...

    def join(self, stream_id: str, subscriber: str) -> None:
        """Mark ``subscriber`` present (renew it at least every lease period)."""

    def leave(self, stream_id: str, subscriber: str) -> None: ...

    def subscribers(self, stream_id: str) -> int: ...

    def on_signal(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(stream_id)`` when a cancel or a leave may concern a producer here."""

    def append_if_next(self, stream_id: str, record: Record) -> None:
        """Append ``record`` only if its id is the next one (no-op if someone did first)."""


def create(config: Mapping[str, Any]) -> Hub:
    """Build the hub the config asks for: Redis when ``RILL_REDIS_URL`` is set, else memory."""
    if config["RILL_REDIS_URL"]:
        from .redis_hub import RedisHub

        return RedisHub(config)
    from .memory import MemoryHub

    return MemoryHub(config)
