"""Byte-exact SSE framing and parsing (WHATWG HTML, "Server-sent events")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rill.sse import (
    HEARTBEAT,
    DataDecoder,
    encode_comment,
    encode_event,
    encode_json_event,
    iter_data,
)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"data": "hello"}, b"data: hello\n\n"),
        ({"data": ""}, b"data: \n\n"),
        ({"data": "a\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\r\nb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\rb"}, b"data: a\ndata: b\n\n"),
        ({"data": "a\n\nb"}, b"data: a\ndata: \ndata: b\n\n"),
        ({"data": "trailing\n"}, b"data: trailing\ndata: \n\n"),
        ({"data": " lead"}, b"data:  lead\n\n"),
        ({"data": "é ✓ 🚀"}, "data: é ✓ 🚀\n\n".encode()),
        ({"data": "x", "event": "delta"}, b"event: delta\ndata: x\n\n"),
        ({"data": "x", "event": "de\nl\rta"}, b"event: delta\ndata: x\n\n"),
        ({"data": "x", "id": 7}, b"id: 7\ndata: x\n\n"),
        ({"data": "x", "id": "a\r\nb\x00c"}, b"id: abc\ndata: x\n\n"),
        ({"data": "x", "retry": 3000}, b"retry: 3000\ndata: x\n\n"),
        (
            {"data": "x", "event": "e", "id": 1, "retry": 10},
            b"id: 1\nevent: e\nretry: 10\ndata: x\n\n",
        ),
    ],
)
def test_encode_event_is_byte_exact(kwargs: dict, expected: bytes) -> None:
    assert encode_event(**kwargs) == expected


@pytest.mark.parametrize(
    ("event", "payload", "id", "expected"),
    [
        ("delta", {"content": "hi"}, 3, b'id: 3\nevent: delta\ndata: {"content":"hi"}\n\n'),
        ("delta", {"content": "a\nb\r\nc"}, 0,
         b'id: 0\nevent: delta\ndata: {"content":"a\\nb\\r\\nc"}\n\n'),
        ("delta", {"content": "é🚀"}, 1,
         'id: 1\nevent: delta\ndata: {"content":"é🚀"}\n\n'.encode()),
        ("delta", {"content": "\u2028\x00"}, 2,
         b'id: 2\nevent: delta\ndata: {"content":"\xe2\x80\xa8\\u0000"}\n\n'),
        ("done", {"finish_reason": None, "usage": None}, 9,
         b'id: 9\nevent: done\ndata: {"finish_reason":null,"usage":null}\n\n'),
    ],
)
def test_encode_json_event_is_byte_exact(event: str, payload: dict, id: int,
                                         expected: bytes) -> None:
    assert encode_json_event(event, payload, id) == expected


def test_json_event_data_never_breaks_lines() -> None:
    """Any text in a JSON payload stays on one data line: JSON escapes CR and LF."""
    framed = encode_json_event("delta", {"content": "\r\n\r\n\n\r"}, 1)
    assert framed.count(b"\n") == 4 and b"\r" not in framed


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", b": \n\n"), ("ping", b": ping\n\n"), ("a\nb", b": a\n: b\n\n")],
)
def test_encode_comment_is_byte_exact(text: str, expected: bytes) -> None:
    assert encode_comment(text) == expected
    assert encode_comment("ping") == HEARTBEAT


# The parsing cases, shared with the page's parser (static/sse.js, tests/integration/test_page.py).
SSE_CASES = json.loads((Path(__file__).with_name("sse_cases.json")).read_text("utf-8"))["cases"]


def splits(stream: bytes, chunks: list[bytes]) -> Iterator[list[bytes]]:
    """The case's own chunks, the stream cut at every byte boundary, and byte by byte."""
    yield chunks
    for i in range(len(stream) + 1):
        yield [stream[:i], stream[i:]]
    yield [stream[i:i + 1] for i in range(len(stream))]


@pytest.mark.parametrize("case", SSE_CASES, ids=[case["name"] for case in SSE_CASES])
def test_iter_data_parses_the_shared_cases(case: dict) -> None:
    """The upstream parser yields each event's data, and also an event left unfinished."""
    chunks = [chunk.encode() for chunk in case["chunks"]]
    expected = [event["data"].encode() for event in case["events"]]
    if "open" in case:
        expected.append(case["open"].encode())
    for pieces in splits(b"".join(chunks), chunks):
        assert list(iter_data(pieces)) == expected, pieces


@pytest.mark.parametrize("pieces", [
    [b"data: ok\n\ndata: ", *[b"x" * 100] * 11],  # one line, never ended
    [b"data: ok\n\ndata: " + b"x" * 1100 + b"\n\n"],  # one line, whole in a read
    [b"data: ok\n\n", *[b"data: " + b"x" * 99 + b"\n"] * 11],  # an event of many lines
    [b"data: ok\n\n: " + b"c" * 1100],  # a comment line
    [b"data: ok\n\ndata: " + b"x" * 900 + b"\n", b"data: " + b"y" * 200 + b"\n\n"],
])
def test_a_line_or_event_over_the_limit_overflows_after_the_events_before(
        pieces: list[bytes]) -> None:
    decoder = DataDecoder(max_bytes=1000)
    events = [event for piece in pieces for event in decoder.feed(piece)]
    assert events == [b"ok"] and decoder.overflow
    assert decoder.feed(b"\n\ndata: more\n\n") == [] and decoder.end() == []
    assert (b"".join(decoder._line), decoder._data) == (b"", [])  # nothing held after it
    with pytest.raises(ValueError, match="over 1000 bytes"):
        list(iter_data(pieces, max_bytes=1000))


def test_an_event_at_the_limit_passes_in_any_number_of_reads() -> None:
    line = b"data: " + b"x" * 1000 + b"\n\n"
    decoder = DataDecoder(max_bytes=1000)
    events = [event for i in range(0, len(line), 10) for event in decoder.feed(line[i:i + 10])]
    assert events == [b"x" * 1000] and not decoder.overflow
