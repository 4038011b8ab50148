"""Build Rill's wheel the way a user's ``pip wheel`` would, for the packaging tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(tmp_path: Path) -> Path:
    """Build Rill's wheel in ``tmp_path`` from a copy of the checkout's files (setuptools'
    build/ cache would hide a change); return its path."""
    source = tmp_path / "source"  # a copy: setuptools' build/ cache would hide a change
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True, text=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source),
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("rill-*.whl")
    return wheel
