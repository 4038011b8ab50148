"""bench/run.py's options and the RESULTS.md sections it writes, without running any load
(``tests/integration/test_bench_smoke.py`` runs it)."""

from __future__ import annotations

from bench import run, sections
from bench.report import Row

ROOT = run.ROOT


def test_quick_runs_starts_and_flowing_on_rills_memory_hub_into_bench_out():
    opts = run.options(["--quick"])
    assert opts.systems == ["rill"]
    assert opts.names == ["starts", "flowing"]
    assert opts.scenarios["starts"].streams == opts.scenarios["flowing"].streams == 2000
    assert opts.out == ROOT / "bench" / "out" / "quick.md"  # never RESULTS.md
    assert not opts.with_soak
    assert not opts.smoke


def test_quick_keeps_a_system_or_scenario_picked_beside_it():
    opts = run.options(["--quick", "--systems", "rill-redis", "--out", "/tmp/q.md"])
    assert opts.systems == ["rill-redis"]
    assert opts.names == ["starts", "flowing"]
    assert str(opts.out) == "/tmp/q.md"
    assert run.options(["--quick", "--scenarios", "starts"]).names == ["starts"]


def test_a_full_run_has_both_fastapi_peers_and_writes_results():
    opts = run.options([])
    assert {"fastapi", "fastapi-tuned"} <= set(opts.systems)
    assert opts.out == ROOT / "bench" / "RESULTS.md"
    assert opts.with_soak


def row(system: str, scenario: str, streams: int = 100, **numbers: float) -> Row:
    base = {"complete": 1.0, "tokens_per_cpu": 1000.0, "ttft_p99": 10.0,
            "kib_per_stream": 10.0, "cpu": 1.0, "itl_p99": 5.0, "total_cpu": 1.0,
            "redis_cpu": 0.0, "producer_lost": 0, "redis_conns": 7}
    return Row(system, scenario, streams, {"complete": "100%"}, {**base, **numbers}, [])


def test_rill_is_compared_with_the_tuned_peer_too():
    rows = [row("rill", "throughput", tokens_per_cpu=200_000.0),
            row("fastapi", "throughput", tokens_per_cpu=10_000.0),
            row("fastapi-tuned", "throughput", tokens_per_cpu=50_000.0)]
    text = "\n".join(sections.targets(rows) + sections.readme_section(
        rows, {"throughput": run.FULL["throughput"]}))
    assert "| `throughput`: tokens per CPU-second ≥ 6x the FastAPI peer | 20.0x | met |" in text
    assert ("| `throughput`: tokens per CPU-second ≥ 4x the tuned FastAPI peer | 4.0x | met |"
            in text)
    assert "| `throughput` | FastAPI, tuned | 4.0x |" in text
    assert "| FastAPI, tuned |" in text


def test_the_stream_start_cost_is_worker_cpu_over_the_streams_of_starts():
    rows = [row("rill", "starts", streams=2000, cpu=2.4), row("rill", "flowing", cpu=9.0)]
    assert sections.start_costs(rows) == [
        "rill: a stream start costs 1.20 ms of worker CPU (`starts`: 2.4 CPU-s / 2,000 "
        "streams; target ≤ 0.6 ms)"]
    assert ("| `starts`: a stream start ≤ 0.6 ms of worker CPU | 1.20 ms | missed |"
            in sections.targets(rows))


def test_second_tabs_count_in_tokens_per_cpu_and_get_their_own_table():
    from types import SimpleNamespace

    from bench.report import Row as ReportRow
    from bench.systems import SYSTEMS

    summary = {"completed": 10, "exact": 10, "tokens": 1000, "ttft_ms": [5.0] * 10,
               "itl_p99_ms": 100.0, "itl_count": 990, "errors": {}, "statuses": {"200": 10},
               "left": {}, "follow": {
                   "streams": 10, "completed": 9, "exact": 9, "tokens": 950, "statuses": {},
                   "errors": {'error event: {"code":"producer_lost"}': 1},
                   "join_ms": [20.0] * 10, "lag_p50_ms": 3.0, "lag_p99_ms": 40.0,
                   "lag_count": 900}}
    load = SimpleNamespace(summary=summary, cpu=0.5, wall=12.0)
    before = SimpleNamespace(sut_cpu={1: 0.0}, redis_cpu=0.0, sim_cpu=0.0, rss_kib=0)
    after = SimpleNamespace(sut_cpu={1: 1.5}, redis_cpu=0.5, sim_cpu=1.0, rss_kib=0)
    scenario = SimpleNamespace(streams=10, ttft_ms=0, name="tabs")
    tabs = ReportRow.of(SYSTEMS["rill-redis-2i"], scenario, load, before, after, 0, None, [],
                        alive=True, redis_conns=3)
    assert tabs.numbers["tokens_per_cpu"] == (1000 + 950) / 2.0
    assert tabs.numbers["producer_lost"] == 1
    assert "second tabs: error producer_lost: 1" in tabs.note
    assert sections.tabs_section([tabs])[-2] == (
        "| rill-redis-2i | `tabs` | the other instance | 90% | 90% | 20 ms / 20 ms "
        "| 3 ms / 40 ms | 975 |")


def test_the_two_worker_target_names_its_worst_scenario_beside_the_memory_hubs_control():
    rows = [row("rill-redis", "flowing", tokens_per_cpu=10_000.0, redis_cpu=1.0, total_cpu=2.0),
            row("rill-redis-2w", "flowing", tokens_per_cpu=8_000.0),
            row("rill-redis", "steady", tokens_per_cpu=10_000.0),
            row("rill-redis-2w", "steady", tokens_per_cpu=9_500.0),
            row("rill", "flowing", tokens_per_cpu=12_000.0),
            row("rill-2w", "flowing", tokens_per_cpu=9_600.0)]
    text = "\n".join(sections.targets(rows) + sections.hub_ratios(rows))
    assert ("| Redis hub, 2 workers: tokens per CPU-second ≥ 0.9x one worker's (worst scenario "
            "but `throughput`) | 0.80x (`flowing`; the memory hub's two workers, a control: "
            "0.80x) | missed |") in text
    assert "| `flowing` | 2.00x | 0.83x | 0.80x | 0.80x | 50% |" in text
    # Without the control in the run, the target says only its own worst scenario.
    assert "| 0.80x (`flowing`) | missed |" in "\n".join(sections.targets(rows[:4]))
