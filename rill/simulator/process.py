"""The simulator as a subprocess, for tests and benchmarks; standard library only."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
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
