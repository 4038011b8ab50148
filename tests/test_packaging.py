"""The built wheel is complete: Rill imports and serves its page from an installed copy."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.wheels import build_wheel

CHECK = """
import sys
# This venv has Rill installed editable: its finder would quietly supply what the wheel lacks.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in f.__module__]
from rill.app import create_app
import importlib.util
assert importlib.util.find_spec('app') is None and importlib.util.find_spec('blueprints') is None
import rill.hub, rill.upstreams.openai_compat
assert rill.__file__.startswith(sys.argv[1]), rill.__file__
client = create_app({"TESTING": True, "RILL_UPSTREAM": "demo"}).test_client()
page = client.get("/")
assert page.status_code == 200 and b"rill-static/chat.js" in page.data, page.status_code
for path in ("/rill-static/chat.js", "/rill-static/vendor/purify.min.js"):
    assert client.get(path).status_code == 200, path
print("ok")
"""


def test_the_wheel_installs_only_rill(tmp_path) -> None:
    """A host app's `app` and `blueprints` (or an rq worker's `import app` after `sys.path
    .append(".")`) must never find Rill's: the wheel holds the `rill` package alone."""
    with zipfile.ZipFile(build_wheel(tmp_path)) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
    assert {name for name in top if not name.endswith(".dist-info")} == {"rill"}
    assert len(top) == 2, top


def test_the_wheel_carries_every_subpackage_template_and_static_file(tmp_path) -> None:
    """`packages = ["rill", "blueprints"]` once left rill.hub, rill.upstreams, templates/ and
    static/ out of the wheel: a non-editable install could not even import the app."""
    wheel = build_wheel(tmp_path)
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    out = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
