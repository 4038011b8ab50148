"""The sections of ``RESULTS.md`` after the results table: Rill against its targets, the
compact table for README with Rill's ratios to the FastAPI peers (idiomatic and tuned) and
its Redis hub's to its memory hub, and the soak's outcome."""

from __future__ import annotations

from typing import Any

from bench.report import Row, _ms


def targets(rows: list[Row]) -> list[str]:
    """Rill's targets (issues 7 and 16) against this run's numbers, where the run has them."""
    got = {(r.system, r.scenario): r.numbers for r in rows if r.numbers}
    rill = {scenario: n for (system, scenario), n in got.items() if system == "rill"}
    checks: list[tuple[str, str, bool | None]] = []

    def check(label: str, value: float | None, ok: bool | None, shown: str) -> None:
        checks.append((label, shown if value is not None else "—",
                       None if value is None else ok))

    # Issue 7 against the idiomatic peer, issue 16 against the tuned one.
    for peer, label, least in (("fastapi", "the FastAPI peer", 6),
                               ("fastapi-tuned", "the tuned FastAPI peer", 4)):
        if "throughput" in rill and (peer, "throughput") in got:
            ours, theirs = (rill["throughput"]["tokens_per_cpu"],
                            got[peer, "throughput"]["tokens_per_cpu"])
            ratio = ours / theirs if ours and theirs else None
            check(f"`throughput`: tokens per CPU-second ≥ {least}x {label}", ratio,
                  ratio is not None and ratio >= least, f"{ratio or 0:.1f}x")
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
    for row in rows:
        if row.system == "rill" and row.scenario == "starts" and row.numbers:
            ms = start_ms(row)
            check(f"`starts`: a stream start ≤ {START_MS} ms of worker CPU", ms, ms <= START_MS,
                  f"{ms:.2f} ms")
    _redis_targets(got, check)
    if not checks:
        return []
    marks = {True: "met", False: "missed", None: "not measured"}
    return ["## Rill against its targets", "", "| target | this run | |", "|---|---|---|",
            *(f"| {label} | {value} | {marks[ok]} |" for label, value, ok in checks), ""]


START_MS = 0.6  # issue 16's target for a stream start, ms of worker CPU


def start_ms(row: Row) -> float:
    """A stream start's cost in ``starts``: the worker's CPU (redis-server's apart) over the
    streams started, in ms (each stream is one token, so its start is nearly all of it)."""
    return row.numbers["cpu"] / row.streams * 1000


def start_costs(rows: list[Row]) -> list[str]:
    """One line per system run in ``starts``: what a stream start cost its worker."""
    return [f"{r.system}: a stream start costs {start_ms(r):.2f} ms of worker CPU (`starts`: "
            f"{r.numbers['cpu']:.1f} CPU-s / {r.streams:,} streams; target ≤ {START_MS} ms)"
            for r in rows if r.scenario == "starts" and r.numbers]


def _redis_targets(got: dict[tuple[str, str], dict[str, Any]], check: Any) -> None:
    """The Redis hub's targets (issue 12): one worker against the memory hub in this run,
    and two workers against one."""
    redis = {scenario: n for (system, scenario), n in got.items() if system == "rill-redis"}
    for name, ttft_limit in (("flowing", 250), ("held", 500)):
        if name not in redis:
            continue
        n = redis[name]
        check(f"Redis hub `{name}`: complete 100%", n["complete"], n["complete"] >= 1.0,
              f"{n['complete']:.0%}")
        check(f"Redis hub `{name}`: added TTFT p99 ≤ {ttft_limit} ms", n["ttft_p99"],
              (n["ttft_p99"] or 1e9) <= ttft_limit, _ms(n["ttft_p99"]))
        if name == "flowing":
            check("Redis hub `flowing`: ITL p99 ≤ 250 ms", n["itl_p99"],
                  (n["itl_p99"] or 1e9) <= 250, _ms(n["itl_p99"]))
            memory = got.get(("rill", name))
            ratio = n["total_cpu"] / memory["total_cpu"] if memory else None
            check("Redis hub `flowing`: CPU (worker + redis-server) ≤ 1.5x the memory hub's",
                  ratio, ratio is not None and ratio <= 1.5, f"{ratio or 0:.2f}x")
        else:
            check("Redis hub `held`: ≤ 64 KiB per stream", n["kib_per_stream"],
                  n["kib_per_stream"] <= 64, f"{n['kib_per_stream']:.0f} KiB")
            check("Redis hub `held`: ≤ 64 Redis connections", n["redis_conns"],
                  (n["redis_conns"] or 1e9) <= 64, f"{n['redis_conns']}")
    lost = [n["producer_lost"] for (system, _), n in got.items()
            if system.startswith("rill-redis")]
    if lost:
        check("Redis hub: no `producer_lost` from a live producer, any scenario", sum(lost),
              sum(lost) == 0, f"{sum(lost)}")
    ratios = {s: two_workers(got, "rill-redis-2w", "rill-redis", s) for s in redis
              if s != "throughput"}
    ratios = {s: r for s, r in ratios.items() if r is not None}
    if ratios:
        scenario = min(ratios, key=ratios.__getitem__)
        control = two_workers(got, "rill-2w", "rill", scenario)
        check("Redis hub, 2 workers: tokens per CPU-second ≥ 0.9x one worker's (worst "
              "scenario but `throughput`)", ratios[scenario], ratios[scenario] >= 0.9,
              f"{ratios[scenario]:.2f}x (`{scenario}`"
              + (f"; the memory hub's two workers, a control: {control:.2f}x)"
                 if control is not None else ")"))


def two_workers(got: dict[tuple[str, str], dict[str, Any]], two: str, one: str,
                scenario: str) -> float | None:
    """Tokens per CPU-second of system ``two`` over ``one``'s in ``scenario`` (None: not
    both run)."""
    a, b = got.get((two, scenario)), got.get((one, scenario))
    if not a or not b or not a["tokens_per_cpu"] or not b["tokens_per_cpu"]:
        return None
    return a["tokens_per_cpu"] / b["tokens_per_cpu"]


LABELS = {"rill": "Rill (memory hub)", "rill-2w": "Rill, memory hub, 2 workers (control)",
          "rill-redis": "Rill, Redis hub",
          "rill-redis-2w": "Rill, Redis hub, 2 workers",
          "rill-redis-2i": "Rill, Redis hub, 2 instances", "fastapi": "FastAPI + sse-starlette",
          "fastapi-tuned": "FastAPI, tuned", "flask": "Flask gthread"}
PEERS = ("fastapi", "fastapi-tuned")  # the peers Rill's ratios are given against
README_COLUMNS = ("complete", "added TTFT p50 / p99", "ITL p99", "KiB / stream",
                  "CPU s (worker + redis)", "tokens / CPU-s", "upstream closed ≤ 1 s / p99")


def readme_section(rows: list[Row], scenarios: dict[str, Any]) -> list[str]:
    """The compact table README's Performance section carries (both hubs), Rill's ratios to
    each FastAPI peer and its Redis hub's to its memory hub: generated, so a rerun never loses
    them."""
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
        for peer in PEERS:
            ours, theirs = got.get(("rill", name)), got.get((peer, name))
            if not ours or not theirs:
                continue
            ratios.append(
                f"| `{name}` | {LABELS[peer]} "
                f"| {_ratio(ours['tokens_per_cpu'], theirs['tokens_per_cpu'])} "
                f"| {_ratio(theirs['ttft_p99'], ours['ttft_p99'])} "
                f"| {_ratio(theirs['kib_per_stream'], ours['kib_per_stream'])} "
                f"| {ours['complete']:.0%} / {theirs['complete']:.0%} |")
    if ratios:
        lines += ["", "Rill against the FastAPI peers in the same run (above 1x is Rill's way):",
                  "", "| scenario | peer | tokens per CPU-s, Rill ÷ peer | added TTFT p99, peer ÷ "
                  "Rill | KiB per stream, peer ÷ Rill | complete, Rill / peer |",
                  "|---|---|---|---|---|---|", *ratios]
    return [*lines, *hub_ratios(rows), ""]


def _ratio(a: float | None, b: float | None, digits: int = 1) -> str:
    return f"{a / b:.{digits}f}x" if a and b else "—"


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.0%}" if whole > 0 else "—"


def hub_ratios(rows: list[Row]) -> list[str]:
    """Rill's Redis hub against its memory hub, scenario by scenario: CPU (the worker's and
    redis-server's) over the memory hub's, tokens per CPU-second, and two workers against one
    on the Redis hub."""
    got = {(r.system, r.scenario): r.numbers for r in rows if r.numbers}
    lines = []
    for name in dict.fromkeys(r.scenario for r in rows):
        memory, redis, two = (got.get((s, name)) for s in ("rill", "rill-redis",
                                                            "rill-redis-2w"))
        if not redis or not (memory or two):
            continue
        memory, two = memory or {}, two or {}
        complete = " / ".join("—" if not n else f"{n['complete']:.0%}"
                              for n in (memory, redis, two))
        control = got.get(("rill-2w", name)) or {}
        lines.append(
            f"| `{name}` | {_ratio(redis['total_cpu'], memory.get('cpu'), 2)} "
            f"| {_ratio(redis['tokens_per_cpu'], memory.get('tokens_per_cpu'), 2)} "
            f"| {_ratio(two.get('tokens_per_cpu'), redis['tokens_per_cpu'], 2)} "
            f"| {_ratio(control.get('tokens_per_cpu'), memory.get('tokens_per_cpu'), 2)} "
            f"| {_share(redis['redis_cpu'], redis['total_cpu'])} "
            f"| {complete} | {redis['producer_lost']} / {two.get('producer_lost', '—')} |")
    if not lines:
        return []
    head = []
    flowing = got.get(("rill", "flowing")), got.get(("rill-redis", "flowing"))
    two = got.get(("rill-redis-2w", "flowing"))
    if flowing[0] and flowing[1]:
        memory, redis = flowing
        head = [f"In `flowing` the Redis hub spent {_ratio(redis['total_cpu'], memory['cpu'], 2)}"
                f" the memory hub's CPU ({redis['cpu']:.1f} s worker + {redis['redis_cpu']:.1f} s"
                f" redis-server against {memory['cpu']:.1f} s), with {redis['complete']:.0%} of "
                f"its streams complete (memory hub: {memory['complete']:.0%})"
                + (f"; two workers on the Redis hub got "
                   f"{_ratio(two['tokens_per_cpu'], redis['tokens_per_cpu'], 2)} the tokens per "
                   f"CPU-second of one." if two else "."), ""]
    return ["", "Rill's Redis hub against its memory hub in the same run (the Redis hub's CPU "
            "counts its redis-server's with its worker's):", "",
            *head,
            "| scenario | CPU s (worker + redis), Redis ÷ memory | tokens / CPU-s, Redis ÷ "
            "memory | tokens / CPU-s, Redis 2 workers ÷ 1 | tokens / CPU-s, memory 2 workers ÷ 1 "
            "(control) | redis-server's share of the Redis hub's CPU | complete: memory / Redis "
            "/ Redis 2w | producer_lost: Redis / 2w |",
            "|---|---|---|---|---|---|---|---|", *lines]


TAB_WHERE = {"rill": "the same worker", "rill-redis": "the same worker",
             "rill-redis-2w": "either worker (the kernel's pick)",
             "rill-redis-2i": "the other instance"}


def tabs_section(rows: list[Row]) -> list[str]:
    """The second tabs of scenarios with ``follow``: where each read its stream, how many
    ended complete and byte-exact, and how far behind the first tab each delta arrived."""
    lines = [f"| {r.system} | `{r.scenario}` | {TAB_WHERE.get(r.system, '—')} "
             f"| {r.numbers['tab_complete']:.0%} | {r.numbers['tab_exact']:.0%} "
             f"| {_ms(r.numbers['join_p50'])} / {_ms(r.numbers['join_p99'])} "
             f"| {_ms(r.numbers['lag_p50'])} / {_ms(r.numbers['lag_p99'])} "
             f"| {r.numbers['tokens_per_cpu'] or 0:,.0f} |"
             for r in rows if r.numbers and "tab_complete" in r.numbers]
    if not lines:
        return []
    return ["## Second tabs", "",
            "Each stream read twice: by the client that started it and by a second tab "
            "(`GET /api/chat/<id>/events` from the start event on, as a browser's second tab "
            "or a resume does). Join: the second tab's request to its first delta. Lag: each "
            "delta's arrival at the second tab minus its arrival at the first (the same event "
            "id). Tokens / CPU-s counts both tabs' tokens.", "",
            "| system | scenario | second tab reads from | complete | byte-exact "
            "| join p50 / p99 | lag p50 / p99 | tokens / CPU-s |",
            "|---|---|---|---|---|---|---|---|", *lines, ""]


def soak_section(lines: list[str]) -> list[str]:
    """The soak's outcome (``bench/soak.py``) when the full run ran it."""
    return ["## Soak: two instances on one Redis, one killed mid-run", "",
            "`bench/soak.py` (also `bench/run.py --soak`): every answer must end complete and "
            "byte-exact, or in `error` `producer_lost` with each id before it delivered once.",
            "", "```", *lines, "```", ""] if lines else []


