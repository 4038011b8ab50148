"""The Redis hub's soak: two Rill instances on one redis-server, one SIGKILLed mid-run.

Run ``.venv/bin/python bench/soak.py`` (or ``bench/run.py --soak``, ``scripts/bench --soak``).
It starts a redis-server, the upstream simulator and two Rill instances (``gunicorn -c
gunicorn.conf.py app:app``, one gevent worker each, ``RILL_PRODUCER_LEASE_SECONDS=2``), sends
``--streams`` streams (of ``--tokens``/4 to ``--tokens`` tokens, ``--itl-ms`` apart)
alternately to each, and once every stream has its ``start`` event waits
``--kill-after`` s and SIGKILLs instance A (worker and arbiter). Each client whose connection
ends without ``done`` or ``error`` resumes on B with ``GET /api/chat/<id>/events`` and
``Last-Event-ID: <last id seen>``. Then every stream is replayed whole on B and compared with
what its client saw.

Passes when every answer either completed byte-exact (``done`` ``stop``, text equal to the
simulator's, ids 0..k each once) or ended in ``error`` ``producer_lost`` with ids 0..k each
once before it (and its text a prefix of the simulator's); anything else counts as "other".
Exits 1 when "other" is not 0 (a duplicate or a gap is always "other"). Traffic stays on
127.0.0.1; the whole run is bounded at about two minutes.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.redis_server import RedisServer, free_port  # noqa: E402
from bench.systems import UNCAPPED  # noqa: E402
from rill.simulator import SimulatorProcess, expected_text  # noqa: E402
from tests.sse_client import Event, parse  # noqa: E402

OUT = ROOT / "bench" / "out"
READ_TIMEOUT = 20.0  # > RILL_HEARTBEAT_SECONDS: a silent subscriber still pings
RESUMES = 5  # most resumes of one answer


@dataclass
class Instance:
    name: str
    url: str
    process: subprocess.Popen
    log_path: Path

    def pids(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [*map(int, path.read_text().split()), self.process.pid]
        except OSError:
            return [self.process.pid]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()


def start_rill(name: str, redis_url: str, simulator: SimulatorProcess) -> Instance:
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "RILL_"))}
    # The bench's caps (one client address opens every stream and every resume).
    env = {**base, "RILL_BIND": f"127.0.0.1:{port}", "RILL_REDIS_URL": redis_url, **UNCAPPED,
           "RILL_PRODUCER_LEASE_SECONDS": "2", "RILL_HEARTBEAT_SECONDS": "5",
           "WEB_CONCURRENCY": "1", "OPENAI_BASE_URL": simulator.base_url,
           "OPENAI_API_KEY": "sk-bench", "RILL_MODEL": "sim", "RILL_MODELS": "*"}
    OUT.mkdir(parents=True, exist_ok=True)
    log_path = OUT / f"soak-{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                                    "app:app"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    instance = Instance(name, f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"Rill {name} exited early:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{instance.url}/readyz", timeout=2):
                return instance
        except OSError:
            if time.monotonic() > deadline:
                instance.stop()
                raise RuntimeError(f"Rill {name} did not start:\n"
                                   f"{log_path.read_text()[-3000:]}") from None
            time.sleep(0.1)


@dataclass
class Answer:
    home: str
    tokens: int
    events: list[Event] = field(default_factory=list)
    resumes: int = 0
    problems: list[str] = field(default_factory=list)  # why a connection ended early

    @property
    def ended(self) -> bool:
        return bool(self.events) and self.events[-1].event in ("done", "error")

    @property
    def stream_id(self) -> str | None:
        if self.events and self.events[0].event == "start":
            return str(self.events[0].json.get("stream_id"))
        return None


def read(session: requests.Session, method: str, url: str, answer: Answer, deadline: float,
         started: threading.Event | None = None, **kwargs: Any) -> None:
    """One connection: append its events to ``answer`` until ``done``/``error``, the
    connection's end, or ``deadline``."""
    try:
        with session.request(method, url, stream=True, timeout=(5, READ_TIMEOUT),
                             **kwargs) as response:
            if response.status_code != 200:
                answer.problems.append(f"{method} {response.status_code} {response.text[:120]}")
                return
            for item in parse(response.iter_content(chunk_size=None)):
                if isinstance(item, Event):
                    answer.events.append(item)
                    if started is not None:
                        started.set()
                    if answer.ended:
                        return
                if time.monotonic() > deadline:
                    answer.problems.append("deadline")
                    return
            answer.problems.append(f"{method}: the connection ended without done or error")
    except Exception as exc:  # a killed server breaks connections in many ways
        answer.problems.append(f"{method}: {type(exc).__name__}")
    finally:
        if started is not None:
            started.set()


def length(i: int, tokens: int) -> int:
    """Stream ``i``'s tokens: from a quarter of ``tokens`` to all of them, so some of the
    killed instance's streams have ended before the kill and some not."""
    low = max(1, tokens // 4)
    return low + (i * 37) % (tokens - low + 1)


def client(i: int, home: Instance, survivor: Instance, tokens: int, itl_ms: int,
           started: threading.Event, deadline: float) -> Answer:
    answer = Answer(home.name, length(i, tokens))
    with requests.Session() as session:
        session.trust_env = False  # no proxy from the environment: 127.0.0.1 only
        body = {"messages": [{"role": "user", "content": "Hi"}],
                "model": f"sim?tokens={answer.tokens}&itl_ms={itl_ms}&tag=s{i}"}
        read(session, "POST", f"{home.url}/api/chat", answer, deadline, started, json=body)
        while (not answer.ended and answer.stream_id and answer.resumes < RESUMES
               and time.monotonic() < deadline):
            answer.resumes += 1
            read(session, "GET", f"{survivor.url}/api/chat/{answer.stream_id}/events", answer,
                 deadline, headers={"Last-Event-ID": str(answer.events[-1].id)})
    return answer


def judge(answer: Answer) -> tuple[str, str]:
    """``("complete" | "producer_lost" | "other", why)``."""
    events = answer.events
    if not events:
        return "other", "no event: " + "; ".join(answer.problems)
    if any(e.id is None for e in events):
        last = events[-1]
        return "other", f"an event without id: {last.event} {last.data[:80]}"
    ids = [int(str(e.id)) for e in events]
    if len(ids) != len(set(ids)):
        return "other", "duplicate ids"
    if ids != list(range(len(ids))):
        return "other", "a gap in the ids"
    if events[0].event != "start":
        return "other", f"first event {events[0].event}"
    last = events[-1]
    text = "".join(e.json.get("content", "") for e in events if e.event == "delta")
    want = expected_text(answer.tokens)
    if last.event == "done":
        finish = last.json.get("finish_reason")
        if finish == "stop" and text == want:
            return "complete", ""
        return "other", f"done {finish} with {len(text)} of {len(want)} characters" + (
            "" if want.startswith(text) else " (not the simulator's text)")
    if last.event == "error":
        code = last.json.get("code")
        if code == "producer_lost" and want.startswith(text):
            return "producer_lost", ""
        return "other", f"error {code}" + ("" if want.startswith(text) else ", wrong text")
    return "other", f"no done or error ({'; '.join(answer.problems) or 'no reason'})"


def replay(session: requests.Session, url: str, deadline: float) -> list[tuple[str, str, str]]:
    """The whole stream from B, as (id, event, data)."""
    answer = Answer("B", 0)
    read(session, "GET", url, answer, min(deadline, time.monotonic() + 10))
    return [(str(e.id), e.event, e.data) for e in answer.events]


@dataclass
class Outcome:
    ok: bool
    lines: list[str]


def run(streams: int = 400, tokens: int = 200, itl_ms: int = 20, ramp: float = 1.0,
        kill_after: float = 1.5, budget: float = 100.0) -> Outcome:
    began = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    with RedisServer(log_path=OUT / "soak-redis.log") as redis, \
            SimulatorProcess("--backlog", "8192") as simulator:
        a = start_rill("A", redis.url, simulator)
        try:
            b = start_rill("B", redis.url, simulator)
        except BaseException:
            a.stop()
            raise
        try:
            return _drive(a, b, streams, tokens, itl_ms, ramp, kill_after, began, budget)
        finally:
            a.stop()
            b.stop()


def _drive(a: Instance, b: Instance, streams: int, tokens: int, itl_ms: int, ramp: float,
           kill_after: float, began: float, budget: float) -> Outcome:
    deadline = began + budget
    started = [threading.Event() for _ in range(streams)]
    with ThreadPoolExecutor(max_workers=streams) as pool:
        futures = []
        t0 = time.monotonic()
        for i in range(streams):
            time.sleep(max(0.0, t0 + i * ramp / streams - time.monotonic()))
            futures.append(pool.submit(client, i, (a, b)[i % 2], b, tokens, itl_ms,
                                       started[i], deadline))
        for event in started:
            event.wait(max(0.0, t0 + ramp + 30 - time.monotonic()))
        time.sleep(kill_after)
        victims = a.pids()
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        answers = [f.result() for f in futures]
    finished = time.monotonic()
    verdicts = [judge(x) for x in answers]
    counts = Counter(kind for kind, _ in verdicts)
    by_home = Counter((x.home, kind) for x, (kind, _) in zip(answers, verdicts, strict=True))
    reasons = Counter(why for kind, why in verdicts if kind == "other")
    lost_after = [x.events[-1].at - killed for x, (kind, _) in zip(answers, verdicts, strict=True)
                  if kind == "producer_lost"]
    with requests.Session() as session, ThreadPoolExecutor(max_workers=32) as pool:
        session.trust_env = False
        seen = [(x.stream_id, [(str(e.id), e.event, e.data) for e in x.events])
                for x in answers if x.stream_id]
        replays = list(pool.map(lambda s: replay(
            session, f"{b.url}/api/chat/{s[0]}/events", began + budget + 15), seen))
    differ = sum(r != events for r, (_, events) in zip(replays, seen, strict=True))
    other = counts["other"]
    lines = [
        f"soak: {len(answers)} streams (sim?tokens={max(1, tokens // 4)}..{tokens}&itl_ms="
        f"{itl_ms}) alternately on Rill A and B (one gevent worker "
        f"each, Redis hub, lease 2 s); A (pids {', '.join(map(str, victims))}) SIGKILLed "
        f"{killed - t0:.1f} s after the first start; clients of A resumed on B",
        f"complete:      {counts['complete']} (A {by_home['A', 'complete']}, "
        f"B {by_home['B', 'complete']})",
        f"producer_lost: {counts['producer_lost']} (A {by_home['A', 'producer_lost']}, "
        f"B {by_home['B', 'producer_lost']})",
        f"other:         {other}",
        *(f"  {n} x {why}" for why, n in reasons.most_common(8)),
        f"duplicates: {reasons['duplicate ids']}, gaps: {reasons['a gap in the ids']}",
        f"resumed on B: {sum(x.resumes > 0 for x in answers)} answers, "
        f"{sum(x.resumes for x in answers)} resumes",
        *([f"producer_lost reached its client {min(lost_after):.1f}-{max(lost_after):.1f} s "
           f"after the kill"] if lost_after else []),
        f"replayed whole on B afterwards: {len(seen) - differ} of {len(seen)} identical to "
        f"what their client saw",
        f"clients done {finished - t0:.0f} s after the first start; soak "
        f"{time.monotonic() - began:.0f} s",
    ]
    ok = other == 0
    lines.append("PASS" if ok else "FAIL: some answers were neither complete nor producer_lost")
    return Outcome(ok, lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=400)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--itl-ms", type=int, default=20)
    parser.add_argument("--kill-after", type=float, default=1.5,
                        help="seconds after every stream has started")
    args = parser.parse_args(argv)
    if not 1 <= args.streams <= 1000:
        parser.error("--streams: 1 to 1000")
    outcome = run(args.streams, args.tokens, args.itl_ms, kill_after=args.kill_after)
    print("\n".join(outcome.lines))
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
