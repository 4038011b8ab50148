"""The built wheel is complete: Rill imports and serves its page from an installed copy."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.wheels import ROOT, build_wheel

CHECK = """
import sys
# This venv has Rill installed editable: its finder would quietly supply what the wheel lacks.
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in f.__module__]
from rill.app import create_app
import importlib.util
assert importlib.util.find_spec('app') is None and importlib.util.find_spec('blueprints') is None
import rill.hub, rill.simulator.scenarios, rill.upstreams.openai_compat
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
    # Every file of the page (its ES modules import each other by name) is in the wheel.
    static = {path.relative_to(ROOT / "static") for path in (ROOT / "static").rglob("*")
              if path.is_file()}
    assert static <= {path.relative_to(site / "rill" / "static")
                      for path in (site / "rill" / "static").rglob("*")}
    out = subprocess.run([sys.executable, "-c", CHECK, str(site)], cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


WITHOUT_EXTRAS = """
import sys

class Missing:  # as if `pip install rill` left the extras out
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("redis", "jwt", "hiredis"):
            raise ImportError(f"No module named {name!r}")

sys.meta_path.insert(0, Missing())
from rill.app import create_app

demo = {"TESTING": True, "RILL_UPSTREAM": "demo", "RILL_DEMO_TTFT_MS": 0,
        "RILL_DEMO_TOKENS_PER_SECOND": 10000}
client = create_app(demo).test_client()
answer = client.post("/api/chat", json={"messages": [{"role": "user", "content": "hi"}]})
assert answer.status_code == 200 and b"event: done" in answer.get_data(), answer.status_code
for extra, setting in (("redis", {"RILL_REDIS_URL": "redis://127.0.0.1:1/0"}),
                       ("jwt", {"RILL_AUTH": "jwt", "RILL_JWT_SECRET": "s" * 32})):
    try:
        create_app({**demo, **setting})
    except ValueError as error:
        assert f"pip install 'rill[{extra}]'" in str(error), error
    else:
        raise AssertionError(f"{setting} started without the {extra} extra")
assert "redis" not in sys.modules and "jwt" not in sys.modules
print("ok")
"""


def test_rill_runs_without_its_extras_and_names_the_one_a_setting_needs() -> None:
    """redis-py and PyJWT are extras (`rill[redis]`, `rill[jwt]`): without them the memory hub
    streams, and a setting that needs one says which to install."""
    out = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
