"""A loopback forward proxy, as HTTP_PROXY names one: absolute-URI requests and CONNECT.

Run as ``python forward_proxy.py LOG_PATH``: it listens on a free port, prints ``ready PORT``
and appends each request line it receives to LOG_PATH. ``GET http://host:port/path`` is sent
to host:port as ``GET /path`` with ``Connection: close`` (one request per connection; the
client's pool opens another), and the answer passed back until the origin closes.
``CONNECT host:port`` answers 200 and passes bytes both ways (a tunnel, for https). Only
127.0.0.1 and localhost origins. Plain threads and sockets, in its own process.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import pytest

LOCAL = ("127.0.0.1", "localhost")
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


def pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        if not (chunk := sock.recv(65536)):
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def handle(client: socket.socket, log_path: str) -> None:
    with client:
        head, rest = read_head(client)
        if not head:
            return
        request_line, *headers = head.split(b"\r\n")
        with open(log_path, "ab") as log:
            log.write(request_line + b"\n")
        method, target, version = request_line.split(b" ")
        if method == b"CONNECT":
            host, _, port = target.decode().rpartition(":")
            path = b""
        else:
            url = urlsplit(target.decode())
            host, port = url.hostname or "", str(url.port or 80)
            path = (url.path or "/").encode() + (b"?" + url.query.encode() if url.query else b"")
        if host not in LOCAL:
            client.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        with socket.create_connection((host, int(port))) as origin:
            if method == b"CONNECT":
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                origin.sendall(rest)
            else:
                kept = [h for h in headers if not h.lower().startswith(
                    (b"connection:", b"proxy-connection:", b"keep-alive:"))]
                origin.sendall(b"\r\n".join([b"%s %s %s" % (method, path, version), *kept,
                                             b"Connection: close", b"", rest]))
            upstream = threading.Thread(target=pipe, args=(client, origin), daemon=True)
            upstream.start()
            pipe(origin, client)


def unset_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove this machine's own proxy variables, either case, from the test's environment
    (an empty one would unset a test's too: urllib reads lowercase last)."""
    for upper in PROXY_VARIABLES:
        monkeypatch.delenv(upper, raising=False)
        monkeypatch.delenv(upper.lower(), raising=False)


@contextlib.contextmanager
def running(log_path: Path) -> Iterator[str]:
    """Run the proxy in a process of its own; yield its URL (``http://127.0.0.1:PORT``)."""
    log_path.touch()
    process = subprocess.Popen([sys.executable, __file__, str(log_path)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    try:
        line = process.stdout.readline()
        assert line.startswith("ready "), line
        yield f"http://127.0.0.1:{line.split()[1]}"
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


def main() -> None:
    log_path = sys.argv[1]
    server = socket.create_server(("127.0.0.1", 0))
    print(f"ready {server.getsockname()[1]}", flush=True)
    while True:
        client, _ = server.accept()
        threading.Thread(target=handle, args=(client, log_path), daemon=True).start()


if __name__ == "__main__":
    main()
