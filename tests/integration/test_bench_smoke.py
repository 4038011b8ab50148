"""The side-by-side benchmark still runs: a short smoke of ``bench/run.py`` (not its numbers),
on Rill's memory hub and on its Redis hub."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


def smoke(out: Path, *args: str) -> dict[str, dict[str, str]]:
    """Run ``bench/run.py --smoke`` and return its table: system/scenario -> column -> cell."""
    run = subprocess.run([sys.executable, "bench/run.py", "--smoke", "--out", str(out), *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=80)
    assert run.returncode == 0, run.stdout + run.stderr
    text = out.read_text()
    assert "## Commands" in text
    lines = text.split("## Results", 1)[1].strip().splitlines()
    table = lines[:next((i for i, line in enumerate(lines) if not line.startswith("|")),
                        len(lines))]
    header = [c.strip() for c in table[0].split("|")[1:-1]]
    rows = {}
    for line in table[2:]:
        cells = dict(zip(header, (c.strip() for c in line.split("|")[1:-1]), strict=True))
        rows[f"{cells['system']}/{cells['scenario']}"] = cells
    return rows


def check_rows(rows: dict[str, dict[str, str]], system: str) -> None:
    mine = {key.split("/")[1]: cells for key, cells in rows.items()
            if key.startswith(system + "/")}
    assert set(mine) == {"throughput", "disconnect", "flowing", "held"}
    for scenario, cells in mine.items():
        assert cells["complete"] == "100%", (scenario, cells)
        assert cells["byte-exact"] == "100%", (scenario, cells)
        assert cells["producer_lost"] == "0", (scenario, cells)
    assert mine["disconnect"]["upstream closed ≤ 1 s / p99"].startswith("100%"), mine


@pytest.mark.timeout(90)
def test_bench_smoke_runs_every_scenario_and_rill_completes_every_stream(tmp_path):
    rows = smoke(tmp_path / "RESULTS.md")
    check_rows(rows, "rill")
    assert {key.split("/")[0] for key in rows} == {"rill"}
    assert rows["rill/flowing"]["redis-server CPU s"] == "—"


@pytest.mark.timeout(90)
def test_bench_smoke_on_the_redis_hub_measures_redis_server_too(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    rows = smoke(tmp_path / "RESULTS.md", "--hub", "redis")
    check_rows(rows, "rill-redis")
    assert {key.split("/")[0] for key in rows} == {"rill-redis"}
    for cells in rows.values():
        assert cells["redis-server CPU s"] != "—", cells
        assert int(cells["Redis conns peak"].replace(",", "")) >= 1, cells
