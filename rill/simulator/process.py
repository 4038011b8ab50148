"""Test helpers, standard library only: the simulator as a subprocess (:class:`SimulatorProcess`)
and a client that sends its request body slowly (:func:`slow_post`)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class SimulatorProcess:
    """The simulator as a subprocess on a free loopback port, for tests and benchmarks.

    Starts ``python -m rill.simulator --port 0 *args`` and waits up to ``timeout`` s for
    its listening line (else ``RuntimeError`` with its stderr). A context manager; standard
    library only, so any test process can use it.
    """

    def __init__(self, *args: str, timeout: float = 10.0) -> None:
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rill.simulator", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=self._stderr, env={**os.environ, "PYTHONPATH": path})
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("rill-simulator listening on http://"):
            self._terminate()
            stderr = self.stderr
            self.stop()
            raise RuntimeError(f"rill-simulator did not start (got {line!r}):\n{stderr}")
        self.url = line.rsplit(" ", 1)[1]
        self.base_url = f"{self.url}/v1"

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stderr(self) -> str:
        """What the simulator wrote to stderr so far (tracebacks, warnings)."""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def requests(self, tag: str | None = None) -> list[dict[str, Any]]:
        """The recorded chat requests (only those tagged ``tag`` if given), oldest first."""
        query = "" if tag is None else "?" + urllib.parse.urlencode({"tag": tag})
        with urllib.request.urlopen(f"{self.url}/_sim/requests{query}", timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    def clear(self) -> None:
        """Forget every recorded request."""
        request = urllib.request.Request(f"{self.url}/_sim/requests", method="DELETE")
        with urllib.request.urlopen(request, timeout=5) as response:
            response.read()

    def find(self, tag: str) -> dict[str, Any] | None:
        """The latest request tagged ``tag``, or ``None``."""
        matches = self.requests(tag)
        return matches[-1] if matches else None

    def wait_for(self, tag: str, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 5.0) -> dict[str, Any]:
        """Poll every 20 ms until the request tagged ``tag`` satisfies ``predicate``.

        Returns its record; raises ``AssertionError`` with the last one seen after
        ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        while True:
            record = self.find(tag)
            if record is not None and predicate(record):
                return record
            if time.monotonic() >= deadline:
                raise AssertionError(f"simulator request {tag!r} never matched; last: {record}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM, wait up to 5 s, then kill; close the pipes. Safe to call twice."""
        self._terminate()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def _terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class SlowPost:
    """What :func:`slow_post` saw: body bytes written, seconds from connect to the end,
    the response status (``None`` if no status line came) and its first bytes."""

    sent: int
    seconds: float
    status: int | None
    response: bytes


def slow_post(url: str, total_bytes: int, byte_every_s: float, *, body: bytes = b"{}",
              headers: dict[str, str] | None = None, max_seconds: float = 30.0) -> SlowPost:
    """POST ``body`` padded with spaces to ``total_bytes`` (a declared ``Content-Length``)
    to ``url`` (``http://host:port/path``), one byte every ``byte_every_s`` seconds.

    Stops writing as soon as the server answers or closes; gives up after ``max_seconds``
    in all (then ``status`` is ``None`` unless a response came). JSON ignores the padding.
    """
    parts = urllib.parse.urlsplit(url)
    payload = body.ljust(total_bytes, b" ")[:total_bytes]
    head = {"Host": parts.netloc, "Content-Type": "application/json",
            "Content-Length": str(total_bytes), "Connection": "close", **(headers or {})}
    start = time.monotonic()
    deadline = start + max_seconds
    sent, response = 0, b""
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=max_seconds) as sock:
        lines = [f"POST {parts.path or '/'} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items())]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        while time.monotonic() < deadline:
            wait = byte_every_s if sent < total_bytes else deadline - time.monotonic()
            readable, _, _ = select.select([sock], [], [], max(wait, 0))
            if readable:
                response = _read_some(sock, deadline)
                break
            if sent < total_bytes:
                try:
                    sock.sendall(payload[sent:sent + 1])
                except OSError:
                    response = _read_some(sock, deadline)
                    break
                sent += 1
    status_line = response.split(b"\r\n", 1)[0].split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else None
    return SlowPost(sent, time.monotonic() - start, status, response)


def _read_some(sock: socket.socket, deadline: float, limit: int = 65536) -> bytes:
    """Read what the server sends until it closes, ``limit`` bytes or ``deadline``."""
    data = b""
    with contextlib.suppress(OSError):
        while len(data) < limit and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not (piece := sock.recv(limit - len(data))):
                break
            data += piece
    return data
