"""Server-Sent Events framing, byte-exact.

Follows the WHATWG HTML Standard, section 9.2 "Server-sent events" (event stream
interpretation): a field line is ``name: value\\n``; the ``data`` of one event may span
several lines, each its own ``data:`` field, which the receiver joins with ``\\n``; an event
ends with a blank line; a line starting with ``:`` is a comment (our heartbeat). Any of
``\\r\\n``, ``\\r`` and ``\\n`` ends a line for the receiver, so every one of them in data
starts a new ``data:`` line here, and they are removed from ``event`` and ``id``.

Everything here is pure and returns UTF-8 ``bytes`` ready to write to the socket.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_FIELD_UNSAFE = re.compile(r"[\r\n\x00]")

HEARTBEAT = b": ping\n\n"


def encode_event(
    data: str,
    *,
    event: str | None = None,
    id: str | int | None = None,
    retry: int | None = None,
) -> bytes:
    """Frame one event.

    ``data`` may hold any text, line breaks included; ``event`` and ``id`` lose line
    breaks and NUL (an ``id`` with NUL is ignored by browsers); ``retry`` is the
    reconnection time in milliseconds. Returns the event's bytes, ending in a blank line.
    """
    lines: list[str] = []
    if id is not None:
        lines.append(f"id: {_FIELD_UNSAFE.sub('', str(id))}")
    if event is not None:
        lines.append(f"event: {_FIELD_UNSAFE.sub('', event)}")
    if retry is not None:
        lines.append(f"retry: {int(retry)}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def encode_json_event(event: str, payload: Any, id: int) -> bytes:
    """Frame one event whose data is ``payload`` as compact JSON (one ``data:`` line).

    JSON escapes every control character, so the data needs no splitting; this is the
    per-token hot path and builds the bytes in one step.
    """
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (id, event.encode(), orjson.dumps(payload))


def encode_comment(text: str = "") -> bytes:
    """Frame a comment line (``: text``), which receivers ignore; keeps idle streams alive."""
    return "".join(f": {line}\n" for line in _LINE_BREAK.split(text)).encode("utf-8") + b"\n"


def iter_data(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the ``data`` of each event in an SSE byte stream, as read from an upstream.

    See :class:`DataDecoder`, which this drives over ``chunks`` to their end.
    """
    decoder = DataDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.end()


class DataDecoder:
    """Incremental parser of an SSE byte stream into each event's ``data`` (bytes).

    Lines may end in ``\\r\\n``, ``\\n`` or ``\\r``; ``data:`` lines of one event are joined
    with ``\\n``; comments and other fields (``event``, ``id``, ``retry``) are skipped.
    Unlike a browser, :meth:`end` still yields an event left open when the stream ends: an
    upstream that omits the last blank line should not lose its last chunk.
    """

    __slots__ = ("_data", "_pending")

    def __init__(self) -> None:
        self._pending = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take the next bytes, split anywhere; return the events they complete."""
        pending = self._pending + chunk if self._pending else chunk
        if b"\r" in pending:
            # Keep a trailing \r: the \n of a \r\n pair may come in the next chunk.
            held = pending.endswith(b"\r")
            pending = pending[:-1] if held else pending
            pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            pending += b"\r" if held else b""
        *lines, self._pending = pending.split(b"\n")
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(b"\n".join(data))
                    data = self._data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
        return events

    def end(self) -> list[bytes]:
        """The stream ended: return the event left open, if any."""
        pending, self._pending = self._pending.rstrip(b"\r"), b""
        if pending.startswith(b"data:"):
            value = pending[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        data, self._data = self._data, []
        return [b"\n".join(data)] if data else []
