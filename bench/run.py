"""The side-by-side benchmark: Rill next to what a user would pick instead.

Run everything (about 13 minutes)::

    .venv/bin/python bench/run.py

It prints a table and writes ``bench/RESULTS.md``. ``--smoke`` runs tiny versions of the
scenarios in seconds (CI); ``--systems rill,fastapi`` and ``--scenarios held,flowing`` pick
rows; ``--out FILE`` writes the results somewhere else. The peers: ``fastapi`` (FastAPI +
sse-starlette + ``openai.AsyncOpenAI``, as the docs show it, ``bench/peers/fastapi_app.py``),
``fastapi-tuned`` (the same contract with the SDK's raw stream, orjson and a plain
``StreamingResponse``, ``bench/peers/fastapi_tuned.py``), both on uvicorn with uvloop and
httptools, and ``flask`` (gunicorn ``gthread``, 64 threads, ``bench/peers/flask_app.py``).

``--quick`` (under a minute, for use while working): ``starts`` and ``flowing`` on ``rill``
(memory hub) only, no soak, written to ``bench/out/quick.md`` (never ``RESULTS.md``), then a
line with what a stream start cost the worker (ms of CPU per stream in ``starts``); with
``--systems``, ``--scenarios`` or ``--out`` those win (``--quick --systems rill-redis``).

``--hub memory|redis|both`` picks which Rill systems run (default ``both``; with ``--smoke``,
``memory``): ``rill`` is Rill on its memory hub; ``rill-redis`` on its Redis hub
(``RILL_REDIS_URL``) with one gevent worker, ``rill-redis-2w`` with two (``WEB_CONCURRENCY=2``,
both on core 0), ``rill-2w`` two on the memory hub (a control for the two-worker target:
what a second process on the core costs with no Redis; ``bench/control_app.py`` lifts Rill's
refusal of it), ``rill-redis-2i`` two instances of one worker each on one Redis, run in
``tabs`` only: its streams start on the first and their second tabs read them from the second,
through Redis (``--smoke`` runs ``rill-redis`` and ``rill-redis-2i``). Each start of a
Redis-hub system gets a fresh ``redis-server`` (Debian's, no persistence) on core 1; its CPU is
shown apart from the worker's, and the peak of its client connections is sampled.
``--systems`` overrides ``--hub``.

``--soak`` runs only the Redis hub's soak (``bench/soak.py``: two Rill instances on one
redis-server, 400 streams, one instance SIGKILLed mid-run, its clients resuming on the other;
about 10 s; exit 1 unless every answer is complete or ``producer_lost`` with no lost or
repeated event). A full run (no ``--smoke``, ``--systems`` or ``--scenarios``; ``--hub`` redis
or both) runs the soak after the scenarios and adds its outcome to ``RESULTS.md``, unless
``--no-soak``; then a failed soak makes the exit status 1 too. ``.venv/bin/python
bench/soak.py`` runs it alone, with its own options.

Each system under test runs pinned to core 0 (``taskset -c 0``), started fresh for each
scenario; the load generator (``bench/loadgen``, Go, built with Debian's ``golang-go``), the
upstream simulator (``rill.simulator``) and redis-server share core 1, and the table shows
their own CPU so one can see they were not the bottleneck. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.redis_server import ClientsSampler  # noqa: E402
from bench.scenarios import EXTRA, FULL, SMOKE, Scenario  # noqa: E402
from bench.sections import start_costs  # noqa: E402
from bench.systems import SYSTEMS, System  # noqa: E402
from rill.simulator import SimulatorProcess  # noqa: E402

LOADGEN = ROOT / "bench" / "out" / "loadgen"
QUICK = ("starts", "flowing")  # --quick: what a stream start costs, and first tokens on time
SUT_CORE, LOAD_CORE = 0, 1


def build_loadgen(smoke: bool = False) -> list[str]:
    """The load generator's command: ``bench/loadgen`` compiled (standard library Go) unless
    up to date; without Go, for ``--smoke`` only, its Python twin ``fallback.py``."""
    source = ROOT / "bench" / "loadgen" / "main.go"
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= source.stat().st_mtime:
        return [str(LOADGEN)]
    if shutil.which("go") is None:
        if smoke:
            return [sys.executable, str(source.with_name("fallback.py"))]
        raise SystemExit("bench: the load generator needs Go: apt-get install -y golang-go")
    LOADGEN.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["go", "build", "-o", str(LOADGEN), "."], cwd=source.parent, check=True,
                   env={**os.environ, "GOFLAGS": "-mod=mod", "GOCACHE": str(LOADGEN.parent
                                                                            / "gocache")})
    return [str(LOADGEN)]


@dataclass(frozen=True)
class Options:
    """What one run does: ``names`` (scenarios, in order) on ``systems``, from ``scenarios``;
    ``out``: the results file (``None``: none); ``with_soak``: the soak after them."""

    names: list[str]
    systems: list[str]
    scenarios: dict[str, Scenario]
    out: Path | None
    smoke: bool
    with_soak: bool
    soak_only: bool


def options(argv: list[str] | None = None) -> Options:
    """The command line's options (``argparse``; an unknown system or scenario exits 2)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny scenarios, seconds in all")
    parser.add_argument("--systems", default="", help="comma-separated: " + ",".join(SYSTEMS))
    parser.add_argument("--scenarios", default="",
                        help="comma-separated: " + ",".join({**FULL, **EXTRA}))
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default bench/RESULTS.md; smoke: none)")
    parser.add_argument("--hub", choices=("memory", "redis", "both"), default=None,
                        help="Rill's hub(s) to run (default both; smoke: memory)")
    parser.add_argument("--soak", action="store_true",
                        help="run only the Redis hub's soak (bench/soak.py)")
    parser.add_argument("--no-soak", action="store_true", help="no soak after a full run")
    parser.add_argument("--quick", action="store_true",
                        help="starts,flowing on rill into bench/out/quick.md (under a minute)")
    args = parser.parse_args(argv)
    if args.quick:
        args.systems = args.systems or "rill"
        args.scenarios = args.scenarios or ",".join(QUICK)
        args.out = args.out or ROOT / "bench" / "out" / "quick.md"
    scenarios = SMOKE if args.smoke else {**FULL, **EXTRA}
    names = [s for s in args.scenarios.split(",") if s] or list(SMOKE if args.smoke else FULL)
    hub = args.hub or ("memory" if args.smoke else "both")
    systems = [s for s in args.systems.split(",") if s] or default_systems(hub, args.smoke)
    if unknown := (set(names) - set(scenarios)) | (set(systems) - set(SYSTEMS)):
        parser.error(f"unknown: {sorted(unknown)}")
    out = args.out if args.out is not None else (None if args.smoke else
                                                 ROOT / "bench" / "RESULTS.md")
    with_soak = not (args.smoke or args.systems or args.scenarios or args.no_soak
                     or hub == "memory")
    return Options(names, systems, scenarios, out, args.smoke, with_soak, args.soak)


def main(argv: list[str] | None = None) -> int:
    opts = options(argv)
    if opts.soak_only:
        from bench import soak

        return soak.main([])
    names, systems, scenarios, out = opts.names, opts.systems, opts.scenarios, opts.out
    all_cores = os.sched_getaffinity(0)
    if os.cpu_count() and os.cpu_count() >= 2:  # type: ignore[operator]
        os.sched_setaffinity(0, {LOAD_CORE})  # the simulator and the load generator inherit it
    loadgen = build_loadgen(opts.smoke)
    load_before = os.getloadavg()
    started = time.time()
    rows = []
    with SimulatorProcess("--backlog", "8192") as simulator:
        for name in names:
            scenario = scenarios[name]
            for system_name in systems:
                system: System = SYSTEMS[system_name]
                if system.runs and name not in system.runs:
                    continue
                if name in system.skip and not opts.smoke:
                    rows.append(report.skipped(system, scenario, system.skip[name]))
                    continue
                print(f"-- {system_name} / {name} ...", flush=True)
                row = run_one(system, scenario, simulator, loadgen)
                rows.append(row)
                print(report.table([row], header=False), flush=True)
    print()
    print(report.table(rows))
    print("\n".join(start_costs(rows)))
    soaked = None
    if opts.with_soak:
        from bench import soak

        os.sched_setaffinity(0, all_cores)  # the soak's processes may use every core
        print("\n-- soak (bench/soak.py) ...", flush=True)
        soaked = soak.run()
        print("\n".join(soaked.lines), flush=True)
    if out is not None:
        report.write(out, rows, names, systems, scenarios, started, load_before, loadgen,
                     soaked.lines if soaked else None)
        print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 1 if soaked is not None and not soaked.ok else 0


def default_systems(hub: str, smoke: bool) -> list[str]:
    """Rill on the hub(s) asked for (the smoke: one Redis-hub system only), then the peers."""
    hubs = {"memory", "redis"} if hub == "both" else {hub}
    picked = [n for n, s in SYSTEMS.items() if s.hub in hubs]
    if smoke:
        return [n for n in picked if n in ("rill", "rill-redis", "rill-redis-2i")]
    return picked + [n for n, s in SYSTEMS.items() if not s.hub]


def run_one(system: System, scenario: Scenario, simulator: SimulatorProcess,
            loadgen: list[str]) -> report.Row:
    """Start ``system`` fresh, warm it, then drive ``scenario`` and measure."""
    from bench import measure

    redis_core = LOAD_CORE if (os.cpu_count() or 1) > LOAD_CORE else SUT_CORE
    with system.start(simulator, scenario, core=SUT_CORE, redis_core=redis_core) as sut:
        measure.warm_up(loadgen, sut.url)
        simulator.clear()
        before = measure.snapshot(sut, simulator)
        sampler = measure.RssSampler(sut.rss_pids)
        clients = ClientsSampler(sut.redis.port) if sut.redis is not None else None
        sampler.start()
        if clients is not None:
            clients.start()
        command = scenario.loadgen_command(loadgen, sut.url, sut.follow_url)
        load = measure.run_loadgen(command)
        sampler.stop()
        redis_conns = clients.stop() if clients is not None else None
        after = measure.snapshot(sut, simulator)
        closes = (measure.close_delays(simulator, load.summary["left"])
                  if scenario.leave_after else None)
        commands = [*([sut.redis.command] if sut.redis else []), sut.command,
                    shlex.join(command)]
        return report.Row.of(system, scenario, load, before, after, sampler.peak_kib, closes,
                             commands, alive=sut.alive(), redis_conns=redis_conns)


if __name__ == "__main__":
    raise SystemExit(main())
