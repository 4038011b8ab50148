"""CPU per upstream event of the transport's chunked decoder against h11's, in this process.

Not a benchmark of Rill (``bench/run.py`` is): it isolates the one part the two transports
differ in, decoding an OpenAI-style event stream (RFC 9112 chunked framing) as it arrives a
read at a time, with 1, 4 or 16 events per read (under load several arrive together).
Run: ``.venv/bin/python bench/framing.py``; prints µs per event, the best of 5 rounds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import h11

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rill.upstreams.http11 import ChunkedDecoder

EVENT = (b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,'
         b'"model":"sim","choices":[{"index":0,"delta":{"content":"token "}}]}\n\n')
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n")
EVENTS = 2000


def hand_written(reads: list[bytes]) -> None:
    decoder = ChunkedDecoder()
    for data in reads:
        decoder.feed(data)


def with_h11(reads: list[bytes]) -> None:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="POST", target="/", headers=[("Host", "x"),
                                                              ("Content-Length", "0")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(HEAD)
    conn.next_event()
    for data in reads:
        conn.receive_data(data)
        out = []
        while type(event := conn.next_event()) is h11.Data:
            out.append(event.data)
        b"".join(out)


def per_event(decode: Callable[[list[bytes]], None], reads: list[bytes]) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(10):
            decode(reads)
        best = min(best, (time.process_time() - started) / 10)
    return best / EVENTS * 1e6


def main() -> None:
    chunk = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
    print("events/read  hand-written µs/event  h11 µs/event")
    for together in (1, 4, 16):
        reads = [chunk * together] * (EVENTS // together)
        print(f"{together:11}  {per_event(hand_written, reads):21.2f}  "
              f"{per_event(with_h11, reads):12.2f}")


if __name__ == "__main__":
    main()
