"""Profile one system under one scenario with py-spy: where the worker's CPU goes.

    .venv/bin/python bench/profile.py rill flowing [--smoke]

Runs the scenario as ``bench/run.py`` does while py-spy samples the worker (from core 1),
then writes ``bench/out/<system>-<scenario>.svg`` (a flame graph) and prints the functions
with the largest share of samples, inclusive and self.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import measure  # noqa: E402
from bench.run import LOAD_CORE, SUT_CORE, build_loadgen  # noqa: E402
from bench.scenarios import EXTRA, FULL, SMOKE  # noqa: E402
from bench.systems import OUT, SYSTEMS  # noqa: E402
from rill.simulator import SimulatorProcess  # noqa: E402

PY_SPY = Path(sys.executable).with_name("py-spy")


def top(raw: Path, count: int = 30) -> str:
    """Summarise py-spy's collapsed stacks: inclusive and self share per function."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():  # --nonblocking can read a frame's name mid-change
            continue
        n = int(samples)
        total += n
        frames = [f.split(" (")[0] + " " + f.rsplit("/", 1)[-1].rstrip(")").split(":")[0]
                  for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    lines = [f"{total} samples", "inclusive:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in inclusive.most_common(count)]
    lines += ["self:"]
    lines += [f"  {n / total:6.1%}  {f}" for f, n in own.most_common(count)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("scenario", choices={**FULL, **EXTRA})
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    args = parser.parse_args()
    os.sched_setaffinity(0, {LOAD_CORE})
    scenario = (SMOKE if args.smoke else {**FULL, **EXTRA})[args.scenario]
    loadgen = build_loadgen()
    name = f"{args.system}-{args.scenario}"
    raw, svg = OUT / f"{name}.txt", OUT / f"{name}.svg"
    with SimulatorProcess("--backlog", "8192") as simulator, \
            SYSTEMS[args.system].start(simulator, scenario, core=SUT_CORE,
                                        redis_core=LOAD_CORE) as sut:
        measure.warm_up(loadgen, sut.url)
        spy = [str(PY_SPY), "record", "--pid", str(sut.rss_pids[0]), "--rate", str(args.rate),
               "--nonblocking"]
        recorders = [subprocess.Popen([*spy, "--format", "raw", "-o", str(raw)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
                     subprocess.Popen([*spy, "-o", str(svg)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)]
        load = measure.run_loadgen(scenario.loadgen_command(loadgen, sut.url))
        for recorder in recorders:
            recorder.send_signal(2)
            recorder.wait(timeout=60)
    s = load.summary
    print(f"{name}: {s['completed']}/{s['streams']} complete, {s['tokens']} tokens, "
          f"ITL p99 {s['itl_p99_ms']:.0f} ms, {load.wall:.1f} s")
    print(top(raw))
    print(f"flame graph: {svg.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
