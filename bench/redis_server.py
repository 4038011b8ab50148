"""A throwaway ``redis-server`` for the benchmark and the soak, and a tiny RESP client for it
(standard library only: the bench's own process does not load redis-py)."""

from __future__ import annotations

import contextlib
import shlex
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any


class Resp:
    """One RESP connection to 127.0.0.1:``port``: ``call("INFO", "clients")``."""

    def __init__(self, port: int, timeout: float = 2.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def call(self, *args: str) -> Any:
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts += [f"${len(data)}\r\n".encode(), data, b"\r\n"]
        self.sock.sendall(b"".join(parts))
        return self._read()

    def _read(self) -> Any:
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("redis-server closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self.file.read(size + 2)[:-2].decode()
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise RuntimeError(f"unexpected reply from redis-server: {line!r}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """Debian's ``redis-server`` on a free loopback port, no persistence, pinned to ``core``
    (``taskset -c``; ``None``: not pinned). A context manager; ``pid`` is redis-server's own
    (taskset execs it)."""

    def __init__(self, core: int | None = None, log_path: Path | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("bench: the Redis hub needs redis-server: "
                             "apt-get install -y redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no"]
        if core is not None:
            argv = ["taskset", "-c", str(core), *argv]
        self.command = shlex.join(argv)
        cwd = log_path.parent if log_path is not None else None
        with open(log_path or "/dev/null", "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        self.pid = self.process.pid
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command} exited ({self.process.returncode})")
            try:
                client = Resp(self.port)
                try:
                    if client.call("PING") == "PONG":
                        return
                finally:
                    client.close()
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def connected_clients(info: str) -> int:
    for line in info.splitlines():
        if line.startswith("connected_clients:"):
            return int(line.split(":", 1)[1])
    raise ValueError("no connected_clients in INFO clients")


class ClientsSampler:
    """The peak of redis-server's ``connected_clients`` over a scenario, sampled with ``INFO
    clients`` every ``period`` s on one connection of its own (not counted in ``peak``)."""

    def __init__(self, port: int, period: float = 0.2) -> None:
        self.port, self.period, self.peak = port, period, 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        client: Resp | None = None
        while True:
            try:
                client = client or Resp(self.port)
                count = connected_clients(client.call("INFO", "clients")) - 1
                self.peak, self.samples = max(self.peak, count), self.samples + 1
            except (OSError, RuntimeError, ValueError):
                if client is not None:
                    client.close()
                client = None
            if self._stop.wait(self.period):
                break
        if client is not None:
            client.close()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak
