"""A quick measurement of Rill's relay, one gevent worker pinned to core 0.

Not the side-by-side benchmark (that compares Rill with its peers); this reports Rill's own
numbers: relay CPU per token for long fast streams, and how soon the upstream sees a client
leave. Run: ``.venv/bin/python bench/quick.py`` (memory hub) or ``… --redis`` (the Redis hub,
on a redis-server it starts). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rill.simulator import SimulatorProcess
from tests.conftest import RedisServer
from tests.integration.conftest import relay_env, run_rill
from tests.sse_client import Event, events_only, parse, text_of

STREAMS, TOKENS = 100, 2000


def worker_cpu_seconds(master_pid: int) -> float:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    total = 0.0
    for pid in children:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def throughput(server) -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "model": f"sim?tokens={TOKENS}"}

    def one(_: int) -> int:
        with requests.post(f"{server.url}/api/chat", json=body, stream=True, timeout=120) as r:
            events = events_only(parse(r.iter_content(chunk_size=None)))
        assert events[-1].event == "done", events[-1]
        return len(text_of(events).split())

    cpu0, wall0 = worker_cpu_seconds(server.process.pid), time.monotonic()
    with ThreadPoolExecutor(max_workers=STREAMS) as pool:
        tokens = sum(pool.map(one, range(STREAMS)))
    cpu = worker_cpu_seconds(server.process.pid) - cpu0
    wall = time.monotonic() - wall0
    print(f"throughput: {STREAMS} streams x {TOKENS} tokens = {tokens} tokens in {wall:.2f} s; "
          f"worker CPU {cpu:.2f} s -> {tokens / cpu:,.0f} tokens per CPU-second "
          f"({cpu / tokens * 1e6:.1f} us per token)")


def disconnect_delay(server, simulator, rounds: int = 20) -> None:
    delays = []
    for i in range(rounds):
        tag = f"bench-dc-{i}-{time.time_ns()}"
        model = f"sim?tokens=10&fault=stall&after=1&tag={tag}"
        body = {"messages": [{"role": "user", "content": "Hi"}], "model": model}
        with requests.post(f"{server.url}/api/chat", json=body, stream=True, timeout=30) as r:
            items = parse(r.iter_content(chunk_size=None))
            next(i for i in items if isinstance(i, Event) and i.event == "delta")
        left = time.time()
        record = simulator.wait_for(tag, lambda rec: rec["ended"] is not None, timeout=5)
        delays.append((record["ended"] - left) * 1000)
    delays.sort()
    print(f"disconnect while the upstream is silent -> upstream closed: median "
          f"{delays[len(delays) // 2]:.1f} ms, max {delays[-1]:.1f} ms over {rounds}")


def main() -> None:
    redis = RedisServer() if "--redis" in sys.argv else None
    try:
        with SimulatorProcess() as simulator:
            env = relay_env(simulator, RILL_STALL_TIMEOUT_SECONDS="60", WEB_CONCURRENCY="1")
            if redis is not None:
                env["RILL_REDIS_URL"] = redis.url
            run(simulator, env)
    finally:
        if redis is not None:
            redis.stop()


def run(simulator, env: dict[str, str]) -> None:
    with run_rill(env, "bench", args=()) as server:
        os.sched_setaffinity(server.process.pid, {0})
        for pid in Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children"
                        ).read_text().split():
            os.sched_setaffinity(int(pid), {0})
        os.sched_setaffinity(simulator.process.pid, {1})
        os.sched_setaffinity(0, {1})
        throughput(server)
        disconnect_delay(server, simulator)


if __name__ == "__main__":
    main()
