"""HTTP/1.1 response framing for the upstream transport (RFC 9112): the status line and
header fields of a response head, the body's framing, and an incremental decoder of the
``chunked`` coding.

Hand-written rather than h11's because it is the transport's per-token work: under the same
transport h11 costs about 5x more CPU per upstream event (``bench/framing.py``), and the
worker relays 2.1x more tokens per CPU-second in ``bench/run.py``'s ``throughput`` with this
one (``bench/PROFILE.md``). Malformed input raises ``httpx2.RemoteProtocolError``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx2

if TYPE_CHECKING:
    from .transport import Connection, UpstreamTransport

Origin = tuple[str, str, int]
MAX_LINE_BYTES = 4096  # a chunk-size or trailer line
_HEX = b"0123456789abcdefABCDEF"


def parse_head(head: bytes) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """``(status, reason, headers)`` of a response head (its CRLF-separated lines, without
    the blank line that ends it); raises ``httpx2.RemoteProtocolError`` if malformed."""
    status_line, *lines = head.split(b"\r\n")
    try:
        version, code, *rest = status_line.split(b" ", 2)
        status = int(code)
    except ValueError:
        raise httpx2.RemoteProtocolError("The response has a malformed status line.") from None
    if not version.startswith(b"HTTP/1.") or not 100 <= status <= 999:
        raise httpx2.RemoteProtocolError("The response is not HTTP/1.x.")
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip():
            raise httpx2.RemoteProtocolError("The response has a malformed header line.")
        headers.append((name, value.strip()))
    return status, rest[0] if rest else b"", headers


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The values of header ``name`` (lowercase) joined by ``", "``; ``None`` if absent."""
    values = [v for k, v in headers if k.lower() == name]
    return b", ".join(values) if values else None


class Body(httpx2.SyncByteStream):
    """A response body as read from the socket: one ``bytes`` per read, framing removed.

    Framing (RFC 9112, section 6.3): no body for ``HEAD``, ``204`` and ``304``; else
    ``chunked`` when it is the last transfer coding; else ``Content-Length``; else until
    the server closes. Read to its end, the connection goes back to the transport.
    """

    def __init__(self, transport: UpstreamTransport, origin: Origin, connection: Connection,
                 method: str, status: int, headers: list[tuple[bytes, bytes]],
                 timeout: float | None) -> None:
        self._transport, self._origin, self._connection = transport, origin, connection
        self._timeout = timeout
        encoding = (header(headers, b"transfer-encoding") or b"").lower()
        length = header(headers, b"content-length")
        self._chunked: ChunkedDecoder | None = None
        self._left: int | None = None  # Content-Length still to read; None: until close
        if method == "HEAD" or status in (204, 304):
            self._left = 0
        elif encoding:
            if encoding.rsplit(b",", 1)[-1].strip() != b"chunked":
                raise httpx2.RemoteProtocolError("Unsupported transfer coding.")
            self._chunked = ChunkedDecoder()
        elif length is not None:
            try:
                self._left = int(length)
            except ValueError:
                raise httpx2.RemoteProtocolError("Malformed Content-Length.") from None
            if self._left < 0:
                raise httpx2.RemoteProtocolError("Malformed Content-Length.")
        connection_header = (header(headers, b"connection") or b"").lower()
        self._reusable = ((self._left is not None or self._chunked is not None)
                          and b"close" not in connection_header and not connection.http10)
        self._complete = self._left == 0
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        connection = self._connection
        buffered, connection.buffer = connection.buffer, b""
        if buffered and (body := self._decode(buffered)):
            yield body
        while not self._complete:
            if body := self._received(connection.recv(self._timeout)):
                yield body

    @property
    def complete(self) -> bool:
        """True once the whole body has been read."""
        return self._complete

    def fileno(self) -> int:
        return self._connection.sock.fileno()

    def read_nowait(self) -> bytes | None:
        """The body bytes that have arrived, framing removed, without waiting: ``None`` if
        nothing has, ``b""`` once the body is complete (or the bytes held only framing).

        For a caller that waits for the socket (:meth:`fileno`) to be readable itself.
        Raises ``httpx2.ReadError`` and ``httpx2.RemoteProtocolError`` as iteration does.
        """
        connection = self._connection
        if connection.buffer:
            buffered, connection.buffer = connection.buffer, b""
            return self._decode(buffered)
        if self._complete:
            return b""
        data = connection.recv_nowait()
        return None if data is None else self._received(data)

    def _received(self, data: bytes) -> bytes:
        """Decode bytes read from the socket, where ``b""`` means the server closed it."""
        if data:
            return self._decode(data)
        if self._left is None and self._chunked is None:
            self._complete = True  # a close-delimited body ends here
            return b""
        raise httpx2.RemoteProtocolError(
            "Server disconnected without sending the complete response body.")

    def _decode(self, data: bytes) -> bytes:
        if self._chunked is not None:
            body = self._chunked.feed(data)
            if self._chunked.done:
                self._complete = True
                self._reusable = self._reusable and not self._chunked.extra
            return body
        if self._left is None:
            return data
        body = data[:self._left]
        self._left -= len(body)
        if not self._left:
            self._complete = True
            self._reusable = self._reusable and len(data) == len(body)
        return body

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._complete and self._reusable:
            self._transport.release(self._origin, self._connection)
        else:
            self._connection.close()


class ChunkedDecoder:
    """Incremental decoder of the ``chunked`` transfer coding (RFC 9112, section 7.1).

    :meth:`feed` takes bytes as they arrive, split anywhere, and returns the chunk data
    they complete, joined; ``done`` turns true after the last chunk and trailer section.
    Raises ``httpx2.RemoteProtocolError`` for malformed framing.
    """

    def __init__(self) -> None:
        self.done = False
        self._pending = b""
        self._left = 0  # data bytes of the current chunk still to come
        self._state = "size"  # size, data, end (the CRLF after data), trailer

    @property
    def extra(self) -> bytes:
        """Bytes received after the end of the body (a server error: the connection is
        not reused)."""
        return self._pending if self.done else b""

    def feed(self, data: bytes) -> bytes:
        buf = self._pending + data if self._pending else data
        out: list[bytes] = []
        pos, size = 0, len(buf)
        while pos < size and not self.done:
            state = self._state
            if state == "data":
                take = min(self._left, size - pos)
                out.append(buf[pos:pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = "end"
                continue
            end = buf.find(b"\n", pos)
            if end < 0:
                if size - pos > MAX_LINE_BYTES:
                    raise httpx2.RemoteProtocolError("A chunk line is too long.")
                break
            line = buf[pos:end].rstrip(b"\r")
            pos = end + 1
            if state == "size":
                digits = line.split(b";", 1)[0].strip()
                if not digits or len(digits) > 16 or digits.translate(None, _HEX):
                    raise httpx2.RemoteProtocolError("Malformed chunk size.")
                self._left = int(digits, 16)
                self._state = "data" if self._left else "trailer"
            elif state == "end":
                if line:
                    raise httpx2.RemoteProtocolError("Chunk data longer than its size.")
                self._state = "size"
            elif not line:  # trailer: an empty line ends the message
                self.done = True
        self._pending = buf[pos:]  # after done: bytes past the body (never reused then)
        return b"".join(out) if len(out) != 1 else out[0]
