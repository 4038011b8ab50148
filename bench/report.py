"""The benchmark's rows, its table (Markdown, printed and written) and ``RESULTS.md``."""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("gevent", "greenlet", "gunicorn", "flask", "openai", "httpx2", "orjson", "fastapi",
            "starlette", "uvicorn", "uvloop", "httptools", "sse-starlette")
COLUMNS = ("system", "scenario", "complete", "byte-exact", "added TTFT p50 / p99",
           "ITL p99", "KiB / stream", "CPU s", "tokens / CPU-s", "upstream closed ≤ 1 s / p99",
           "sim + loadgen CPU s", "wall s")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Row:
    system: str
    scenario: str
    streams: int
    cells: dict[str, str]
    numbers: dict[str, Any]
    commands: list[str]
    note: str = ""

    @classmethod
    def of(cls, system: Any, scenario: Any, load: Any, before: Any, after: Any,
           peak_kib: int, closes: list[float | None] | None, sut_command: str,
           loadgen_command: list[str], alive: bool) -> Row:
        s, n = load.summary, scenario.streams
        ttft = [t - scenario.ttft_ms for t in s["ttft_ms"]]
        cpu = sum(after.sut_cpu.get(p, c) - c for p, c in before.sut_cpu.items())
        kib = (peak_kib - before.rss_kib) / n
        numbers: dict[str, Any] = {
            "complete": s["completed"] / n, "exact": s["exact"] / n,
            "ttft_p50": percentile(ttft, 50), "ttft_p99": percentile(ttft, 99),
            "itl_p99": s["itl_p99_ms"] if s["itl_count"] else None,
            "kib_per_stream": kib, "cpu": cpu, "tokens": s["tokens"],
            "tokens_per_cpu": s["tokens"] / cpu if cpu > 0 else None,
            "sim_cpu": after.sim_cpu - before.sim_cpu, "loadgen_cpu": load.cpu,
            "wall": load.wall, "statuses": s["statuses"], "errors": s["errors"],
        }
        close_cell = "—"
        if closes is not None:
            known = [c for c in closes if c is not None]
            within = sum(1 for c in known if c <= 1.0) / max(len(closes), 1)
            p99 = percentile(known, 99)
            numbers.update(closed_within_1s=within, close_p99_ms=None if p99 is None
                           else p99 * 1000, left=len(closes))
            close_cell = f"{within:.0%} / {_ms(numbers['close_p99_ms'])}"
        cells = {
            "complete": f"{numbers['complete']:.0%}", "byte-exact": f"{numbers['exact']:.0%}",
            "added TTFT p50 / p99": f"{_ms(numbers['ttft_p50'])} / {_ms(numbers['ttft_p99'])}",
            "ITL p99": _ms(numbers["itl_p99"]), "KiB / stream": f"{kib:.0f}",
            "CPU s": f"{cpu:.1f}",
            "tokens / CPU-s": "—" if numbers["tokens_per_cpu"] is None
            else f"{numbers['tokens_per_cpu']:,.0f}",
            "upstream closed ≤ 1 s / p99": close_cell,
            "sim + loadgen CPU s": f"{numbers['sim_cpu']:.1f} + {load.cpu:.1f}",
            "wall s": f"{load.wall:.0f}",
        }
        note = "" if alive else "the server process died during the run"
        if s["errors"]:
            note = "; ".join(filter(None, [note, ", ".join(
                f"{k}: {v}" for k, v in sorted(s["errors"].items(), key=lambda kv: -kv[1])[:3])]))
        return cls(system.name, scenario.name, n, cells, numbers,
                   [sut_command, shlex.join(loadgen_command)], note)


def skipped(system: Any, scenario: Any, why: str) -> Row:
    return Row(system.name, scenario.name, scenario.streams, {}, {}, [], f"not run: {why}")


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.1f} s" if value >= 10_000 else f"{value:.0f} ms"


def table(rows: list[Row], header: bool = True) -> str:
    lines = []
    if header:
        lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [row.system, row.scenario, *(row.cells.get(c, "—") for c in COLUMNS[2:])]
        if not row.cells:
            cells[2] = row.note
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[str]:
    """Rill's targets (issue 7) against this run's numbers, where the run has them."""
    got = {(r.system, r.scenario): r.numbers for r in rows if r.numbers}
    rill = {scenario: n for (system, scenario), n in got.items() if system == "rill"}
    checks: list[tuple[str, str, bool | None]] = []

    def check(label: str, value: float | None, ok: bool | None, shown: str) -> None:
        checks.append((label, shown if value is not None else "—",
                       None if value is None else ok))

    if "throughput" in rill and ("fastapi", "throughput") in got:
        ours, theirs = (rill["throughput"]["tokens_per_cpu"],
                        got["fastapi", "throughput"]["tokens_per_cpu"])
        ratio = ours / theirs if ours and theirs else None
        check("`throughput`: tokens per CPU-second ≥ 6x the FastAPI peer", ratio,
              ratio is not None and ratio >= 6, f"{ratio or 0:.1f}x")
    for name, ttft_limit, kib_limit in (("flowing", 250, None), ("held", 500, 64)):
        if name in rill:
            n = rill[name]
            check(f"`{name}`: complete 100%", n["complete"], n["complete"] >= 1.0,
                  f"{n['complete']:.0%}")
            check(f"`{name}`: added TTFT p99 ≤ {ttft_limit} ms", n["ttft_p99"],
                  (n["ttft_p99"] or 1e9) <= ttft_limit, _ms(n["ttft_p99"]))
            if kib_limit is None:
                check(f"`{name}`: ITL p99 ≤ 250 ms", n["itl_p99"], (n["itl_p99"] or 1e9) <= 250,
                      _ms(n["itl_p99"]))
            else:
                check(f"`{name}`: ≤ {kib_limit} KiB per stream", n["kib_per_stream"],
                      n["kib_per_stream"] <= kib_limit, f"{n['kib_per_stream']:.0f} KiB")
    if "disconnect" in rill and "closed_within_1s" in rill["disconnect"]:
        n = rill["disconnect"]
        check("`disconnect`: upstream closed within 1 s, 100%", n["closed_within_1s"],
              n["closed_within_1s"] >= 1.0, f"{n['closed_within_1s']:.0%}")
        check("`disconnect`: close delay p99 ≤ 100 ms", n["close_p99_ms"],
              (n["close_p99_ms"] or 1e9) <= 100, _ms(n["close_p99_ms"]))
    if not checks:
        return []
    marks = {True: "met", False: "missed", None: "not measured"}
    return ["## Rill against its targets", "", "| target | this run | |", "|---|---|---|",
            *(f"| {label} | {value} | {marks[ok]} |" for label, value, ok in checks), ""]


LABELS = {"rill": "Rill", "fastapi": "FastAPI + sse-starlette", "flask": "Flask gthread"}
README_COLUMNS = ("complete", "added TTFT p50 / p99", "ITL p99", "KiB / stream",
                  "tokens / CPU-s", "upstream closed ≤ 1 s / p99")


def readme_section(rows: list[Row], scenarios: dict[str, Any]) -> list[str]:
    """The compact table README's Performance section carries, and Rill's ratios to the
    FastAPI peer: generated, so a rerun never loses them."""
    lines = ["## For README's Performance section", "",
             "| system | scenario | " + " | ".join(README_COLUMNS) + " |",
             "|" + "---|" * (len(README_COLUMNS) + 2)]
    seen: set[str] = set()
    for row in rows:
        if not row.cells:
            continue
        about = "" if row.scenario in seen else f"`{row.scenario}`: {scenarios[row.scenario].about}"
        seen.add(row.scenario)
        cells = [row.cells.get(c, "—") for c in README_COLUMNS]
        lines.append(f"| {LABELS.get(row.system, row.system)} | {about} | "
                     + " | ".join(cells) + " |")
    got = {(r.system, r.scenario): r.numbers for r in rows if r.numbers}
    ratios = []
    for name in dict.fromkeys(r.scenario for r in rows):
        ours, theirs = got.get(("rill", name)), got.get(("fastapi", name))
        if not ours or not theirs:
            continue

        def ratio(a: float | None, b: float | None) -> str:
            return f"{a / b:.1f}x" if a and b else "—"

        ratios.append(f"| `{name}` | {ratio(ours['tokens_per_cpu'], theirs['tokens_per_cpu'])} "
                      f"| {ratio(theirs['ttft_p99'], ours['ttft_p99'])} "
                      f"| {ratio(theirs['kib_per_stream'], ours['kib_per_stream'])} "
                      f"| {ours['complete']:.0%} / {theirs['complete']:.0%} |")
    if ratios:
        lines += ["", "Rill against the FastAPI peer in the same run (above 1x is Rill's way):", "",
                  "| scenario | tokens per CPU-s, Rill ÷ FastAPI | added TTFT p99, FastAPI ÷ Rill "
                  "| KiB per stream, FastAPI ÷ Rill | complete, Rill / FastAPI |",
                  "|---|---|---|---|---|", *ratios]
    return [*lines, ""]


def versions() -> str:
    found = []
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    go = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    return f"Python {platform.python_version()}, " + ", ".join(found) + (f"; {go}" if go else "")


def machine() -> str:
    model = "unknown CPU"
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    return f"{model}, {os.cpu_count()} cores; Linux {platform.release()}"


def write(path: Path, rows: list[Row], names: list[str], systems: list[str],
          scenarios: dict[str, Any], started: float, load: tuple[float, float, float],
          loadgen: list[str]) -> None:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    took = time.time() - started
    lines = [
        "# Benchmark results", "",
        f"Run {when} ({took / 60:.1f} min) with "
        f"`{shlex.join(['.venv/bin/python', 'bench/run.py', *sys.argv[1:]])}`.", "",
        f"- Machine: {machine()}; load average before the run "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.",
        f"- Versions: {versions()}.",
        "- Each system: one worker pinned to core 0 (`taskset -c 0`), started fresh per "
        "scenario after 4 warm-up streams. Simulator (`rill.simulator`) and load generator "
        f"(`bench/loadgen`, {'Go' if len(loadgen) == 1 else 'its Python fallback'}) on core 1.",
        "- Added TTFT: time from sending the POST to the first `delta`, minus the upstream's "
        "configured TTFT. ITL: gaps between `delta` events at the client. KiB / stream: (peak "
        "RSS of the worker during the scenario minus its RSS before) / streams. CPU s: utime + "
        "stime of the server's whole process tree. Upstream closed: simulator's end of the "
        "upstream request minus the moment the client closed its connection.", "",
        "## Scenarios", "",
        *(f"- `{n}`: {scenarios[n].about} (`{scenarios[n].model}`; abandoned after "
          f"{scenarios[n].deadline:.0f} s)" for n in names), "",
        "## Results", "", table(rows), "",
    ]
    lines += targets(rows)
    lines += ["Where Rill's worker spends its time, and what would close the missed targets: "
              "[`bench/PROFILE.md`](PROFILE.md).", ""]
    busy = [(r.numbers["sim_cpu"] + r.numbers["loadgen_cpu"]) / r.numbers["wall"]
            for r in rows if r.numbers and r.numbers["wall"] > 0]
    notes = [
        "- Rill merges tokens that waited together into one `delta` (fewer, larger events under "
        "load, every token once); the peers send one event per upstream chunk.",
        *([f"- The simulator and the load generator together kept core 1 at most "
           f"{max(busy):.0%} busy in any row: neither was the bottleneck."] if busy else []),
        *(f"- {r.system} / {r.scenario}: {r.note}" for r in rows if r.note)]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    lines += readme_section(rows, scenarios)
    lines += ["## Commands", ""]
    for row in rows:
        if row.commands:
            lines += [f"{row.system} / {row.scenario}:", "", "```sh",
                      *row.commands, "```", ""]
    path.write_text("\n".join(lines))
