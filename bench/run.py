"""The side-by-side benchmark: Rill next to what a user would pick instead.

Run everything (about 12 minutes)::

    .venv/bin/python bench/run.py

It prints a table and writes ``bench/RESULTS.md``. ``--smoke`` runs tiny versions of the
scenarios in seconds (CI); ``--systems rill,fastapi`` and ``--scenarios held,flowing`` pick
rows; ``--out FILE`` writes the results somewhere else.

Each system under test runs one worker pinned to core 0 (``taskset -c 0``), started fresh for
each scenario; the load generator (``bench/loadgen``, Go, built with Debian's ``golang-go``)
and the upstream simulator (``rill.simulator``) share core 1, and the table shows their own
CPU so one can see they were not the bottleneck. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.scenarios import EXTRA, FULL, SMOKE, Scenario  # noqa: E402
from bench.systems import SYSTEMS, System  # noqa: E402
from rill.simulator import SimulatorProcess  # noqa: E402

LOADGEN = ROOT / "bench" / "out" / "loadgen"
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny scenarios, seconds in all")
    parser.add_argument("--systems", default="", help="comma-separated: " + ",".join(SYSTEMS))
    parser.add_argument("--scenarios", default="",
                        help="comma-separated: " + ",".join({**FULL, **EXTRA}))
    parser.add_argument("--out", type=Path, default=None,
                        help="results file (default bench/RESULTS.md; smoke: none)")
    args = parser.parse_args(argv)
    scenarios = SMOKE if args.smoke else {**FULL, **EXTRA}
    names = [s for s in args.scenarios.split(",") if s] or list(SMOKE if args.smoke else FULL)
    systems = [s for s in args.systems.split(",") if s] or (
        ["rill"] if args.smoke else list(SYSTEMS))
    if unknown := (set(names) - set(scenarios)) | (set(systems) - set(SYSTEMS)):
        parser.error(f"unknown: {sorted(unknown)}")
    out = args.out if args.out is not None else (None if args.smoke else
                                                 ROOT / "bench" / "RESULTS.md")
    if os.cpu_count() and os.cpu_count() >= 2:  # type: ignore[operator]
        os.sched_setaffinity(0, {LOAD_CORE})  # the simulator and the load generator inherit it
    loadgen = build_loadgen(args.smoke)
    load_before = os.getloadavg()
    started = time.time()
    rows = []
    with SimulatorProcess("--backlog", "8192") as simulator:
        for name in names:
            scenario = scenarios[name]
            for system_name in systems:
                system: System = SYSTEMS[system_name]
                if name in system.skip and not args.smoke:
                    rows.append(report.skipped(system, scenario, system.skip[name]))
                    continue
                print(f"-- {system_name} / {name} ...", flush=True)
                row = run_one(system, scenario, simulator, loadgen)
                rows.append(row)
                print(report.table([row], header=False), flush=True)
    print()
    print(report.table(rows))
    if out is not None:
        report.write(out, rows, names, systems, scenarios, started, load_before, loadgen)
        print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


def run_one(system: System, scenario: Scenario, simulator: SimulatorProcess,
            loadgen: list[str]) -> report.Row:
    """Start ``system`` fresh, warm it, then drive ``scenario`` and measure."""
    from bench import measure

    with system.start(simulator, scenario, core=SUT_CORE) as sut:
        measure.warm_up(loadgen, sut.url)
        simulator.clear()
        before = measure.snapshot(sut, simulator)
        sampler = measure.RssSampler(sut.rss_pid)
        sampler.start()
        command = scenario.loadgen_command(loadgen, sut.url)
        load = measure.run_loadgen(command)
        sampler.stop()
        after = measure.snapshot(sut, simulator)
        closes = (measure.close_delays(simulator, load.summary["left"])
                  if scenario.leave_after else None)
        return report.Row.of(system, scenario, load, before, after, sampler.peak_kib, closes,
                             sut.command, command, alive=sut.alive())


if __name__ == "__main__":
    raise SystemExit(main())
