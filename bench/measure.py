"""What the benchmark reads: CPU and memory from /proc (the server's, and redis-server's with
the Redis hub), the load generator's summary, and the simulator's record of when each upstream
request ended."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rill.simulator import SimulatorProcess

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status (``VmRSS``, ``VmHWM``); 0 if unreadable."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


@dataclass
class Snapshot:
    at: float
    sut_cpu: dict[int, float]
    sim_cpu: float
    rss_kib: int
    redis_cpu: float = 0.0  # redis-server's utime + stime (0 without the Redis hub)


def snapshot(sut: Any, simulator: SimulatorProcess) -> Snapshot:
    return Snapshot(time.monotonic(), {p: cpu_seconds(p) for p in sut.pids()},
                    cpu_seconds(simulator.process.pid),
                    sum(status_kib(p, "VmRSS") for p in sut.rss_pids),
                    cpu_seconds(sut.redis.pid) if sut.redis is not None else 0.0)


class RssSampler:
    """Peak RSS of the workers over a scenario (summed over ``pids``): VmHWM (reset at the
    start through ``clear_refs``, Linux >= 4.0) and VmRSS sampled every 50 ms, whichever is
    higher. With several workers the summed VmHWM may overstate the peak of the sum."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.peak_kib = list(pids), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_kib = max(self.peak_kib, sum(status_kib(p, "VmRSS") for p in self.pids))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, sum(status_kib(p, "VmHWM") for p in self.pids))


@dataclass
class Load:
    summary: dict[str, Any]
    cpu: float  # the load generator's own CPU seconds
    wall: float


def run_loadgen(command: list[str]) -> Load:
    """Run the load generator to its end; its CPU comes from wait4's rusage."""
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE,
                               env={**os.environ, "GOMAXPROCS": "1"})
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"the load generator failed ({process.returncode}): {command}")
    return Load(json.loads(out), usage.ru_utime + usage.ru_stime, time.monotonic() - started)


def warm_up(loadgen: list[str], url: str) -> None:
    """A few streams first, so lazy imports and first-use caches are not measured."""
    run_loadgen([*loadgen, "-url", f"{url}/api/chat", "-n", "4", "-model",
                 "sim?tokens=5", "-tag", "warmup", "-tokens", "5", "-deadline", "20"])
    time.sleep(0.3)


def close_delays(simulator: SimulatorProcess, left: dict[str, float],
                 settle: float = 2.0) -> list[float | None]:
    """Seconds from each client leaving to the simulator seeing its upstream request end
    (``None``: it had not ended ``settle`` s after the last client left)."""
    time.sleep(settle)
    ended = {r["params"].get("tag"): r["ended"] for r in simulator.requests()}
    return [None if ended.get(tag) is None else ended[tag] - at for tag, at in left.items()]
