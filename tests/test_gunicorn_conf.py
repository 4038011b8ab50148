"""gunicorn.conf.py's worker settings, loaded as gunicorn loads it (in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import gc, runpy, types
ns = runpy.run_path("gunicorn.conf.py")
worker = types.SimpleNamespace(handle_exit=lambda sig, frame: None, wsgi=object(), cfg=None)
ns["post_worker_init"](worker)
print(gc.get_threshold(), gc.get_freeze_count() > 0)
"""


def probe(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RILL_")}
    return subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_the_worker_freezes_its_imports_and_raises_the_gc_thresholds() -> None:
    result = probe()
    assert result.stdout.split("\n")[0] == "(10000, 10, 10) True", result.stderr
    assert probe(RILL_GC_THRESHOLDS="2000,5,5").stdout.startswith("(2000, 5, 5) True")


def test_keepalive_0_is_refused_as_it_would_unbound_slow_headers() -> None:
    """gunicorn's gevent worker times a request's headers only by keepalive."""
    result = probe(RILL_KEEPALIVE="0")
    assert result.returncode != 0
    assert "RILL_KEEPALIVE must be at least 1" in result.stderr


@pytest.mark.parametrize("value", ["1,2", "a,b,c", "0,10,10"])
def test_bad_gc_thresholds_stop_gunicorn_with_a_clear_message(value: str) -> None:
    result = probe(RILL_GC_THRESHOLDS=value)
    assert result.returncode != 0
    assert "RILL_GC_THRESHOLDS must be three whole numbers" in result.stderr


def test_the_listen_backlog_holds_a_burst() -> None:
    """gunicorn's default backlog of 2,048 reset 15 % of bench's `held` burst on two busy
    workers; Rill asks for 4,096 (the kernel caps it at somaxconn)."""
    show = "import runpy; print(runpy.run_path('gunicorn.conf.py')['backlog'])"
    base = {k: v for k, v in os.environ.items() if not k.startswith("RILL_")}
    for env, expected in (({}, "4096"), ({"RILL_BACKLOG": "512"}, "512")):
        result = subprocess.run([sys.executable, "-c", show], cwd=ROOT, env={**base, **env},
                                capture_output=True, text=True, timeout=60)
        assert result.stdout.strip() == expected, result.stderr
