"""The side-by-side benchmark still runs: a short smoke of ``bench/run.py`` (not its numbers)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


@pytest.mark.timeout(90)
def test_bench_smoke_runs_every_scenario_and_rill_completes_every_stream(tmp_path):
    out = tmp_path / "RESULTS.md"
    run = subprocess.run([sys.executable, "bench/run.py", "--smoke", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=80)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in out.read_text().splitlines() if line.startswith("| rill |")}
    assert set(rows) == {"throughput", "disconnect", "flowing", "held"}
    for scenario, cells in rows.items():
        assert cells[2] == "100%", (scenario, cells)  # complete
        assert cells[3] == "100%", (scenario, cells)  # byte-exact
    assert rows["disconnect"][9].startswith("100%"), rows["disconnect"]  # upstream closed
    assert "## Commands" in out.read_text()
