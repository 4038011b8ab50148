"""The benchmark's rows, its table (Markdown, printed and written) and ``RESULTS.md`` (whose
sections after the table are in ``bench/sections.py``)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("gevent", "greenlet", "gunicorn", "flask", "openai", "httpx2", "orjson", "fastapi",
            "starlette", "uvicorn", "uvloop", "httptools", "sse-starlette")
COLUMNS = ("system", "scenario", "complete", "byte-exact", "added TTFT p50 / p99",
           "ITL p99", "KiB / stream", "CPU s", "redis-server CPU s", "CPU s (worker + redis)",
           "tokens / CPU-s", "Redis conns peak", "producer_lost", "upstream closed ≤ 1 s / p99",
           "sim + loadgen CPU s", "wall s")


def error_codes(errors: dict[str, int]) -> Counter[str]:
    """The load generator's errors with each ``error event: {"code", …}`` as its code
    (``producer_lost``, ``hub_unavailable``, …), the rest (``deadline``, ``EOF before done``)
    as they are."""
    codes: Counter[str] = Counter()
    for key, count in errors.items():
        if key.startswith("error event"):
            try:
                key = "error " + str(json.loads(key.partition(": ")[2])["code"])
            except (ValueError, KeyError, TypeError):
                key = "error event"
        codes[key] += count
    return codes


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
           peak_kib: int, closes: list[float | None] | None, commands: list[str],
           alive: bool, redis_conns: int | None = None) -> Row:
        """``commands``: redis-server's (Redis hub), the server's, the load generator's;
        ``redis_conns``: the peak of redis-server's clients (``None``: no Redis)."""
        s, n = load.summary, scenario.streams
        ttft = [t - scenario.ttft_ms for t in s["ttft_ms"]]
        # Workers that ended during the run (a crash) count what they had at the start.
        cpu = sum(after.sut_cpu.get(p, c) - c for p, c in before.sut_cpu.items())
        redis_cpu = after.redis_cpu - before.redis_cpu
        total = cpu + redis_cpu
        kib = (peak_kib - before.rss_kib) / n
        codes = error_codes(s["errors"])
        tab = s.get("follow")  # the second tabs' summary (scenarios with ``follow``)
        tab_codes = error_codes(tab["errors"]) if tab else Counter()
        tokens = s["tokens"] + (tab["tokens"] if tab else 0)  # every tab's
        numbers: dict[str, Any] = {
            "complete": s["completed"] / n, "exact": s["exact"] / n,
            "ttft_p50": percentile(ttft, 50), "ttft_p99": percentile(ttft, 99),
            "itl_p99": s["itl_p99_ms"] if s["itl_count"] else None,
            "kib_per_stream": kib, "cpu": cpu, "redis_cpu": redis_cpu, "total_cpu": total,
            "tokens": tokens, "tokens_per_cpu": tokens / total if total > 0 else None,
            "redis_conns": redis_conns,
            "producer_lost": codes["error producer_lost"] + tab_codes["error producer_lost"],
            "sim_cpu": after.sim_cpu - before.sim_cpu, "loadgen_cpu": load.cpu,
            "wall": load.wall, "statuses": s["statuses"], "errors": dict(codes),
        }
        if tab:
            numbers.update(
                tab_complete=tab["completed"] / n, tab_exact=tab["exact"] / n,
                tab_tokens=tab["tokens"], lag_p50=tab["lag_p50_ms"] if tab["lag_count"] else None,
                lag_p99=tab["lag_p99_ms"] if tab["lag_count"] else None,
                join_p50=percentile(tab["join_ms"], 50), join_p99=percentile(tab["join_ms"], 99),
                tab_errors=dict(tab_codes))
        redis = redis_conns is not None
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
            "CPU s": f"{cpu:.1f}", "redis-server CPU s": f"{redis_cpu:.1f}" if redis else "—",
            "CPU s (worker + redis)": f"{total:.1f}",
            "tokens / CPU-s": "—" if numbers["tokens_per_cpu"] is None
            else f"{numbers['tokens_per_cpu']:,.0f}",
            "Redis conns peak": f"{redis_conns:,}" if redis else "—",
            "producer_lost": f"{numbers['producer_lost']:,}",
            "upstream closed ≤ 1 s / p99": close_cell,
            "sim + loadgen CPU s": f"{numbers['sim_cpu']:.1f} + {load.cpu:.1f}",
            "wall s": f"{load.wall:.0f}",
        }
        note = "" if alive else "the server process died during the run"
        if codes:
            note = "; ".join(filter(None, [note, ", ".join(
                f"{k}: {v}" for k, v in codes.most_common(4))]))
        if tab_codes:
            note = "; ".join(filter(None, [note, "second tabs: " + ", ".join(
                f"{k}: {v}" for k, v in tab_codes.most_common(4))]))
        return cls(system.name, scenario.name, n, cells, numbers, commands, note)


def skipped(system: Any, scenario: Any, why: str) -> Row:
    return Row(system.name, scenario.name, scenario.streams, {}, {}, [], f"not run: {why}")


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:.1f} s" if value >= 10_000 else f"{round(value)} ms"  # never "-0"


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
          loadgen: list[str], soak: list[str] | None = None) -> None:
    """Write ``RESULTS.md``: the run, the table, then ``bench/sections.py``'s sections
    (``soak``: the soak's printed outcome, when the run ran it)."""
    from bench.sections import readme_section, soak_section, tabs_section, targets

    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    took = time.time() - started
    lines = [
        "# Benchmark results", "",
        f"Run {when} ({took / 60:.1f} min) with "
        f"`{shlex.join(['.venv/bin/python', 'bench/run.py', *sys.argv[1:]])}`.", "",
        f"- Machine: {machine()}; load average before the run "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}.",
        f"- Versions: {versions()}.",
        "- Each system: one worker (`rill-redis-2w`: two gevent workers; `rill-2w`: two on the "
        "memory hub, a control for the two-worker target, which Rill refuses to deploy; "
        "`rill-redis-2i`: two instances of one worker each on one Redis) pinned to core 0 "
        "(`taskset -c 0`), started fresh per scenario after 4 warm-up streams. Simulator "
        "(`rill.simulator`) and load generator "
        f"(`bench/loadgen`, {'Go' if len(loadgen) == 1 else 'its Python fallback'}) on core 1; "
        "with Rill's Redis hub (`rill-redis*`, `RILL_REDIS_URL`) a fresh `redis-server` "
        "(no persistence) per scenario on core 1 too.",
        "- Added TTFT: time from sending the POST to the first `delta`, minus the upstream's "
        "configured TTFT. ITL: gaps between `delta` events at the client. KiB / stream: (peak "
        "RSS of the worker during the scenario minus its RSS before) / streams. CPU s: utime + "
        "stime of the server's whole process tree (all workers); redis-server CPU s: its own, "
        "apart; tokens / CPU-s: tokens (every tab's) over CPU s (worker + redis). Redis conns "
        "peak: the most "
        "`connected_clients` of redis-server's `INFO clients` (sampled every 200 ms, minus the "
        "sampler's own). producer_lost: streams that ended in `error` `producer_lost`. Upstream "
        "closed: simulator's end of the upstream request minus the moment the client closed "
        "its connection.", "",
        "## Scenarios", "",
        *(f"- `{n}`: {scenarios[n].about} (`{scenarios[n].model}`; abandoned after "
          f"{scenarios[n].deadline:.0f} s)" for n in names), "",
        "## Results", "", table(rows), "",
    ]
    lines += targets(rows)
    profile = Path(os.path.relpath(Path(__file__).with_name("PROFILE.md"), path.resolve().parent))
    lines += ["Where Rill's worker spends its time, and what would close the missed targets: "
              f"[`bench/PROFILE.md`]({profile}).", ""]
    busy = [(r.numbers["sim_cpu"] + r.numbers["loadgen_cpu"] + r.numbers["redis_cpu"])
            / r.numbers["wall"]
            for r in rows if r.numbers and r.numbers["wall"] > 0]
    notes = [
        "- Rill merges tokens that waited together into one `delta` (fewer, larger events under "
        "load, every token once); the peers send one event per upstream chunk.",
        *([f"- The simulator, the load generator and redis-server together kept core 1 at "
           f"most {max(busy):.0%} busy in any row"
           + (": none was the bottleneck." if max(busy) < 0.9 else ".")] if busy else []),
        *(f"- {r.system} / {r.scenario}: {r.note}" for r in rows if r.note)]
    if notes:
        lines += ["Notes:", "", *notes, ""]
    lines += tabs_section(rows)
    lines += readme_section(rows, scenarios)
    lines += soak_section(soak or [])
    lines += ["## Commands", ""]
    for row in rows:
        if row.commands:
            lines += [f"{row.system} / {row.scenario}:", "", "```sh",
                      *row.commands, "```", ""]
    path.write_text("\n".join(lines))
