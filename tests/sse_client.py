"""A small SSE reader for tests: parses a byte stream into events, with arrival times."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Event:
    event: str = "message"
    data: str = ""
    id: str | None = None
    at: float = field(default_factory=time.monotonic)

    @property
    def json(self) -> Any:
        return json.loads(self.data)


def parse(chunks: Iterable[bytes]) -> Iterator[Event | str]:
    """Yield each event (and each comment, as ``str``) as its last byte arrives (WHATWG)."""
    buffer = b""
    current: dict[str, Any] = {}
    data: list[str] = []
    for chunk in chunks:
        buffer += chunk
        while True:
            line, sep, rest = _split_line(buffer)
            if not sep:
                break
            buffer = rest
            text = line.decode("utf-8")
            if text == "":
                if data or current:
                    yield Event(data="\n".join(data), **current)
                current, data = {}, []
            elif text.startswith(":"):
                yield text[1:].lstrip(" ")
            else:
                name, _, value = text.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                elif name in ("event", "id"):
                    current[name] = value


def _split_line(buffer: bytes) -> tuple[bytes, bytes, bytes]:
    for i, byte in enumerate(buffer):
        if byte == 10:
            return buffer[:i], b"\n", buffer[i + 1:]
        if byte == 13:
            if i + 1 == len(buffer):
                return buffer, b"", b""  # wait: maybe \r\n
            sep = b"\r\n" if buffer[i + 1] == 10 else b"\r"
            return buffer[:i], sep, buffer[i + len(sep):]
    return buffer, b"", b""


def events_only(items: Iterable[Event | str]) -> list[Event]:
    return [item for item in items if isinstance(item, Event)]


def text_of(events: Iterable[Event], kind: str = "delta") -> str:
    return "".join(e.json["content"] for e in events if e.event == kind)
