"""The side-by-side benchmark still runs: a short smoke of ``bench/run.py`` (not its numbers),
on Rill's memory hub and on its Redis hub."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


Table = dict[str, dict[str, str]]


def smoke(out: Path, *args: str) -> tuple[Table, Table]:
    """Run ``bench/run.py --smoke``; return its results table and its second tabs' table,
    each as system/scenario -> column -> cell."""
    run = subprocess.run([sys.executable, "bench/run.py", "--smoke", "--out", str(out), *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=80)
    assert run.returncode == 0, run.stdout + run.stderr
    text = out.read_text()
    assert "## Commands" in text
    return _table(text, "## Results"), _table(text, "## Second tabs")


def _table(text: str, heading: str) -> Table:
    """The first table after ``heading``."""
    lines = text.split(heading, 1)[1].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[first:]))
    header = [c.strip() for c in table[0].split("|")[1:-1]]
    rows = {}
    for line in table[2:]:
        cells = dict(zip(header, (c.strip() for c in line.split("|")[1:-1]), strict=True))
        rows[f"{cells['system']}/{cells['scenario'].strip('`')}"] = cells
    return rows


def check_rows(rows: Table, tabs: Table, system: str) -> None:
    mine = {key.split("/")[1]: cells for key, cells in rows.items()
            if key.startswith(system + "/")}
    assert set(mine) == {"throughput", "disconnect", "flowing", "held", "tabs"}
    for scenario, cells in mine.items():
        assert cells["complete"] == "100%", (scenario, cells)
        assert cells["byte-exact"] == "100%", (scenario, cells)
        assert cells["producer_lost"] == "0", (scenario, cells)
    assert mine["disconnect"]["upstream closed ≤ 1 s / p99"].startswith("100%"), mine
    check_tabs(tabs, system)


def check_tabs(tabs: Table, system: str) -> None:
    """Every second tab read its stream whole, and the lag was measured."""
    cells = tabs[f"{system}/tabs"]
    assert (cells["complete"], cells["byte-exact"]) == ("100%", "100%"), cells
    assert "—" not in cells["lag p50 / p99"], cells


@pytest.mark.timeout(90)
def test_bench_smoke_runs_every_scenario_and_rill_completes_every_stream(tmp_path):
    rows, tabs = smoke(tmp_path / "RESULTS.md")
    check_rows(rows, tabs, "rill")
    assert {key.split("/")[0] for key in rows} == {"rill"}
    assert rows["rill/flowing"]["redis-server CPU s"] == "—"


@pytest.mark.timeout(90)
def test_bench_smoke_on_the_redis_hub_measures_redis_server_too(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    rows, tabs = smoke(tmp_path / "RESULTS.md", "--hub", "redis")
    check_rows(rows, tabs, "rill-redis")
    # Two instances on one Redis: each second tab reads from the one that did not start it.
    assert {key for key in rows if key.startswith("rill-redis-2i/")} == {"rill-redis-2i/tabs"}
    assert tabs["rill-redis-2i/tabs"]["second tab reads from"] == "the other instance"
    check_tabs(tabs, "rill-redis-2i")
    assert {key.split("/")[0] for key in rows} == {"rill-redis", "rill-redis-2i"}
    for cells in rows.values():
        assert cells["redis-server CPU s"] != "—", cells
        assert int(cells["Redis conns peak"].replace(",", "")) >= 1, cells
