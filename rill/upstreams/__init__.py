"""Upstreams: where chat completions come from, behind one narrow interface.

An :class:`Upstream` opens a stream for a :class:`~rill.chat_request.ChatRequest` and
yields Rill's own events, so the relay never sees a vendor's wire format:

- ``("delta", {"content": str})`` — answer text, one or more tokens;
- ``("reasoning", {"content": str})`` — a reasoning model's thinking;
- ``("tool_call", {"index": int, "id": str | None, "name": str | None, "arguments": str})``
  — a fragment of a tool call, when the request offered tools (see
  :mod:`rill.upstreams.tool_calls`);
- ``("done", {"finish_reason": str | None, "usage": dict | None})`` — the last event.

``open`` raises :class:`~rill.errors.UpstreamError` before anything streams (the view
answers with an HTTP error); iteration raises it mid-stream (the relay sends an ``error``
event). :func:`create` picks an upstream by ``RILL_UPSTREAM``, as a registry of names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from ..chat_request import ChatRequest

Event = tuple[str, dict[str, Any]]
DRAIN_SECONDS = 5.0  # after done, how long reading the rest of a body (for reuse) may take


class UpstreamStream(Protocol):
    """Iterating yields events; a stream may also have ``batches()``, yielding lists of the
    events that arrived together (see :func:`batches_of`)."""

    model: str
    def __iter__(self) -> Iterator[Event]: ...

    def close(self) -> None:
        """Release the upstream request; closes its connection unless fully read."""


class NonBlockingStream(UpstreamStream, Protocol):
    """A stream that can also be read without waiting, once its socket is readable."""

    @property
    def body_ended(self) -> bool:
        """True once nothing more can come: the body was read to its end, or broke."""

    def fileno(self) -> int | None:
        """The socket to wait on; ``None`` if the stream can only be iterated."""

    def read_nowait(self) -> list[Event] | None:
        """The events that arrived (the last may be ``done`` or ``error``); ``None`` if none."""


def batches_of(stream: UpstreamStream) -> Iterator[list[Event]]:
    """The stream's ``batches()`` if it has them, else each event as a batch of one."""
    batches = getattr(stream, "batches", None)
    if batches is not None:
        return iter(batches())
    return ([event] for event in stream)


class Upstream(Protocol):
    demo: bool

    def open(self, request: ChatRequest) -> UpstreamStream: ...


def _openai(config: Mapping[str, Any]) -> Upstream:
    from .openai_compat import OpenAIUpstream

    return OpenAIUpstream(config)


def _demo(config: Mapping[str, Any]) -> Upstream:
    from .demo import DemoUpstream

    return DemoUpstream(config)


REGISTRY: dict[str, Callable[[Mapping[str, Any]], Upstream]] = {
    "openai": _openai,
    "demo": _demo,
}


def create(config: Mapping[str, Any], environ: Mapping[str, str] = os.environ) -> Upstream:
    """Build the upstream ``RILL_UPSTREAM`` names (``auto``: openai if configured, else demo).

    Raises ``ValueError`` for an unknown name.
    """
    name = config["RILL_UPSTREAM"]
    if name == "auto":
        configured = environ.get("OPENAI_API_KEY") or environ.get("OPENAI_BASE_URL")
        name = "openai" if configured else "demo"
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"RILL_UPSTREAM={name!r} is not one of: auto, {', '.join(REGISTRY)}"
        ) from None
    return factory(config)
