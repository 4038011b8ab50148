"""What one Rill app holds at run time: upstream, hub, caps and the generations it runs."""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any

from . import errors, producers, relay
from .auth import Authenticator
from .generation import Generation, Limits
from .hub import Hub
from .limits import StreamCaps
from .producers import Producer
from .steps import ToolSteps
from .tools import DEFAULT, ToolRegistry
from .upstreams import Upstream, UpstreamStream


class RillState:
    """Kept in ``app.extensions["rill"]``. ``producers`` are the generations this worker runs."""

    def __init__(self, config: Mapping[str, Any], upstream: Upstream, hub: Hub,
                 caps: StreamCaps, auth: Authenticator, login_url: str = "",
                 subscriber_caps: StreamCaps | None = None,
                 tools: ToolRegistry | None = None) -> None:
        self.upstream, self.hub, self.caps, self.auth = upstream, hub, caps, auth
        self.tools = tools if tools is not None else DEFAULT  # server-side tools (rill.tools)
        # GET …/events subscriptions per client (the POST's own response counts in ``caps``)
        self.subscriber_caps = subscriber_caps or StreamCaps(0, 0)
        self.login_url = login_url  # a URL or an endpoint name; empty: none
        self.limiter: Any = None  # the flask-limiter Limiter on POST /api/chat and …/events
        self.producers: dict[str, Producer] = {}
        self.opening: set[relay.Errand[UpstreamStream]] = set()  # upstreams being opened
        self.draining = False
        self.limits = Limits(
            stall_timeout=config["RILL_STALL_TIMEOUT_SECONDS"],
            max_seconds=config["RILL_STREAM_MAX_SECONDS"],
            orphan_grace=config["RILL_ORPHAN_GRACE_SECONDS"],
        )
        hub.on_signal(self._wake)

    def _wake(self, stream_id: str) -> None:
        producer = self.producers.get(stream_id)
        if producer is not None:
            producer.signal()

    def start_generation(self, stream_id: str, upstream: UpstreamStream, owner: str | None,
                         on_finish: Callable[[], None],
                         log_fields: Mapping[str, Any] | None = None,
                         steps: ToolSteps | None = None) -> Producer:
        """Open ``stream_id`` in the hub and run ``upstream`` into it (and the further model
        steps of ``steps``, when server-side tools run: :mod:`rill.steps`).

        ``log_fields`` (the request id, the client key) go into the stream's summary log
        line. Raises :class:`~rill.errors.HubUnavailable` when the hub cannot be reached.
        """
        self.hub.open(stream_id, owner)

        def finished() -> None:
            self.producers.pop(stream_id, None)
            on_finish()

        generation = Generation(self.hub, stream_id,
                                {"stream_id": stream_id, "model": upstream.model},
                                self.limits, on_finish=finished, log_fields=log_fields,
                                steps=steps)
        producer = producers.create(generation, upstream)
        self.producers[stream_id] = producer  # before it can finish, or signal
        try:
            producer.start()
        except BaseException:
            self.producers.pop(stream_id, None)
            raise
        return producer

    def open_upstream(self, open_: Callable[[], UpstreamStream],
                      sock: socket.socket | None) -> UpstreamStream:
        """Run ``open_`` (an upstream's ``open``, which waits for the status line and the
        retries) as a :class:`~rill.relay.Errand` for the client on ``sock``.

        Raises :class:`~rill.relay.ClientLeft` as soon as the client leaves, and
        :class:`~rill.errors.Unavailable` (503) if the worker's drain runs out of time first
        (:meth:`shut_down`); the upstream request is closed either way.
        """
        errand = relay.Errand(open_, sock)
        self.opening.add(errand)
        try:
            return errand.result()
        finally:
            self.opening.discard(errand)

    def check_owner(self, stream_id: str, user: str | None) -> None:
        """Raise StreamNotFound (404, never 403: no oracle) unless ``user`` may use the stream.

        A stream started without a user is a capability: its id alone grants access.
        """
        owner = self.hub.owner(stream_id)
        if owner is not None and owner != user:
            raise errors.StreamNotFound()

    def refuse_when_draining(self) -> None:
        """Raise :class:`~rill.errors.Unavailable` (503) once shutdown has begun."""
        if self.draining:
            raise errors.Unavailable("This server is shutting down; please retry.",
                                     retry_after=1)

    def shut_down(self) -> None:
        """End every generation still running here with ``error`` ``shutdown``, and answer
        every POST still opening its upstream 503 ``unavailable``."""
        for errand in list(self.opening):
            errand.stop(errors.Unavailable("This server is restarting; please send your "
                                           "message again.", retry_after=1))
        for producer in list(self.producers.values()):
            producer.stop(errors.Shutdown(retry_after=1))
