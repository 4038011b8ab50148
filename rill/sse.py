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
_BOM = b"\xef\xbb\xbf"  # UTF-8's byte order mark, which a stream may begin with

HEARTBEAT = b": ping\n\n"
# The default limit of an upstream's line or event (RILL_UPSTREAM_MAX_EVENT_BYTES).
MAX_EVENT_BYTES = 1024 * 1024


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


def iter_data(chunks: Iterable[bytes], max_bytes: int = MAX_EVENT_BYTES) -> Iterator[bytes]:
    """Yield the ``data`` of each event in an SSE byte stream, as read from an upstream.

    See :class:`DataDecoder`, which this drives over ``chunks`` to their end. Raises
    ``ValueError`` for a line or event over ``max_bytes``, after the events before it.
    """
    decoder = DataDecoder(max_bytes)
    for chunk in chunks:
        yield from decoder.feed(chunk)
        if decoder.overflow:
            raise ValueError(f"an SSE line or event over {max_bytes} bytes")
    yield from decoder.end()


class DataDecoder:
    """Incremental parser of an SSE byte stream into each event's ``data`` (bytes).

    Lines may end in ``\\r\\n``, ``\\n`` or ``\\r``; ``data:`` lines of one event are joined
    with ``\\n`` (a bare ``data`` line adds an empty one); comments and other fields
    (``event``, ``id``, ``retry``) are skipped; one UTF-8 BOM at the very start is dropped.
    Unlike a browser, :meth:`end` still yields an event left open when the stream ends: an
    upstream that omits the last blank line should not lose its last chunk.

    A line, or an event's data, longer than ``max_bytes`` sets ``overflow``: the events
    before it are returned, and from then on nothing is kept and nothing more returned.
    An open line's pieces are kept in a list and joined once, when its end comes (linear
    time, however many reads a long line takes).
    """

    __slots__ = ("_at_start", "_counted", "_data", "_data_bytes", "_line", "_line_bytes",
                 "max_bytes", "overflow")

    def __init__(self, max_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_bytes = max_bytes
        self.overflow = False
        self._line: list[bytes] = []  # the pieces of a line not ended yet
        self._line_bytes = 0
        self._data: list[bytes] = []  # the data lines of the open event
        self._data_bytes = 0  # their size, as of the last read
        self._counted = 0  # how many of them that size counts
        self._at_start = True  # no line has ended yet: the first may begin with a BOM

    def feed(self, chunk: bytes) -> list[bytes]:
        """Take the next bytes, split anywhere; return the events they complete."""
        pieces = self._line
        if pieces:  # a line left open by an earlier read, or the overflow's mark
            if self.overflow:
                return []
            pieces.append(chunk)
            if b"\n" not in chunk and b"\r" not in chunk:
                self._line_bytes += len(chunk)
                if self._line_bytes > self.max_bytes:
                    self._overflow()
                return []
            pending = b"".join(pieces)
        else:
            pending = chunk
        if b"\r" in pending:
            # Keep a trailing \r: the \n of a \r\n pair may come in the next chunk.
            cr_held = pending.endswith(b"\r")
            pending = pending[:-1] if cr_held else pending
            pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            pending += b"\r" if cr_held else b""
        *lines, rest = pending.split(b"\n")
        if rest:
            self._line = [rest]
            self._line_bytes = len(rest)
        elif pieces:
            self._line = []
        if lines and self._at_start:
            self._at_start = False
            lines[0] = lines[0].removeprefix(_BOM)
        events: list[bytes] = []
        held_data = data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(b"\n".join(data))
                    data = []
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
            elif line == b"data":
                data.append(b"")
        self._data = data
        # Sizes are checked per read, not per line: no event this read completes or leaves
        # open is longer than this read and the data held before it together.
        held = held_before = self._data_bytes
        if data or held:
            if data is not held_data:
                held = self._counted = 0
            held = self._data_bytes = held + sum(map(len, data[self._counted:]))
            self._counted = len(data)
        if len(pending) + held_before > self.max_bytes:
            return self._check(events, held)
        return events

    def _check(self, events: list[bytes], held: int) -> list[bytes]:
        """Of ``events``, those before the first over the limit; the overflow if one is,
        or if the held line or event is."""
        limit = self.max_bytes
        for i, event in enumerate(events):
            if len(event) > limit:
                self._overflow()
                return events[:i]
        if held > limit or self._line_bytes > limit:
            self._overflow()
        return events

    def end(self) -> list[bytes]:
        """The stream ended: return the event left open, if any."""
        # The line left open ends with the stream: parsed as feed() parses every line.
        events = self.feed(b"\n") if self._line and not self.overflow else []
        if self.overflow:
            return []
        data, self._data, self._data_bytes, self._counted = self._data, [], 0, 0
        return [*events, b"\n".join(data)] if data else events

    def _overflow(self) -> None:
        """Drop what is held; the mark in ``_line`` sends every later read to the check."""
        self.overflow = True
        self._line, self._line_bytes, self._data, self._data_bytes = [b""], 0, [], 0
        self._counted = 0
