"""A loopback TCP proxy that cuts the first chat stream mid-answer, like a network blip.

Run as ``python cut_proxy.py TARGET_PORT CUT_AFTER_BYTES``: it listens on a free port, prints
``ready PORT``, and forwards every connection to 127.0.0.1:TARGET_PORT. The first time a
client sends ``POST /api/chat`` (on any connection, kept-alive ones included), that
connection is cut (both sides closed) once CUT_AFTER_BYTES more bytes of response have
passed; everything else passes untouched. Plain threads and sockets, in its own process.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading

lock = threading.Lock()
cut_done = False


class Connection:
    def __init__(self, client: socket.socket, upstream: socket.socket, cut_after: int) -> None:
        self.client, self.upstream, self.cut_after = client, upstream, cut_after
        self.armed = False

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def requests(self) -> None:
        global cut_done
        try:
            while data := self.client.recv(65536):
                with lock:
                    if not cut_done and b"POST /api/chat " in data:
                        cut_done = self.armed = True
                self.upstream.sendall(data)
        except OSError:
            pass
        self.close()

    def responses(self) -> None:
        passed = 0
        try:
            while data := self.upstream.recv(65536):
                if self.armed:
                    if passed + len(data) >= self.cut_after:
                        self.client.sendall(data[: self.cut_after - passed])
                        break
                    passed += len(data)
                self.client.sendall(data)
        except OSError:
            pass
        self.close()


def main() -> None:
    target, cut_after = int(sys.argv[1]), int(sys.argv[2])
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    print(f"ready {server.getsockname()[1]}", flush=True)
    while True:
        client, _ = server.accept()
        connection = Connection(client, socket.create_connection(("127.0.0.1", target)),
                                cut_after)
        threading.Thread(target=connection.requests, daemon=True).start()
        threading.Thread(target=connection.responses, daemon=True).start()


if __name__ == "__main__":
    main()
