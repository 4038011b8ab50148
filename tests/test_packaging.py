"""The built wheel is complete: Rill imports and serves its page from an installed copy."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import sys
# This venv has Rill installed editable: its finder would quietly supply what the wheel lacks.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in f.__module__]
from app import create_app
import rill.hub, rill.upstreams.openai_compat
assert rill.__file__.startswith(sys.argv[1]), rill.__file__
client = create_app({"TESTING": True, "RILL_UPSTREAM": "demo"}).test_client()
page = client.get("/")
assert page.status_code == 200 and b"rill-static/chat.js" in page.data, page.status_code
for path in ("/rill-static/chat.js", "/rill-static/vendor/purify.min.js"):
    assert client.get(path).status_code == 200, path
print("ok")
"""


def test_the_wheel_carries_every_subpackage_template_and_static_file(tmp_path) -> None:
    """`packages = ["rill", "blueprints"]` once left rill.hub, rill.upstreams, templates/ and
    static/ out of the wheel: a non-editable install could not even import the app."""
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
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    out = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
