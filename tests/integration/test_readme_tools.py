"""README's Tools example is real: its code block, loaded as it stands through ``RILL_TOOLS``,
is offered to a signed-in user and run between model steps (issue 17, item 5)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT, RillServer, relay_env, run_rill, sim_model
from tests.integration.test_client_tools import read

pytestmark = pytest.mark.integration

USER = {"role": "user", "content": "Where is my order 1042?"}


def readme_example() -> str:
    """The first Python block of README's "### Tools" section."""
    section = (ROOT / "README.md").read_text().split("\n### Tools\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.fixture(scope="module")
def readme_rill(simulator, tmp_path_factory) -> Iterator[RillServer]:
    folder: Path = tmp_path_factory.mktemp("readme")
    (folder / "readme_tools.py").write_text(readme_example())
    env = relay_env(simulator, RILL_TOOLS="readme_tools", PYTHONPATH=str(folder),
                    RILL_AUTH="header")  # X-Forwarded-User from 127.0.0.1
    with run_rill(env, "readme-tools") as server:
        yield server


@pytest.mark.parametrize(("user", "ok", "content"), [
    ("alice", True, '{"order_id":1042,"status":"shipped"}'),
    ("bob", False, "You have no order 1042."),
])
def test_the_readme_tool_runs_for_a_signed_in_user(readme_rill, simulator, user, ok, content):
    model, tag = sim_model(tools="openai", steps=2, call="order_status",
                           args='{"order_id": 1042}', tokens=4)
    events = read(readme_rill.chat({"messages": [USER], "model": model},
                                   headers={"X-Forwarded-User": user}))
    (result,) = [e.json for e in events if e.event == "tool_result"]
    assert (result["name"], result["ok"], result["content"]) == ("order_status", ok, content)
    assert events[-1].event == "done" and events[-1].json["finish_reason"] == "stop"
    assert [t["function"]["name"] for t in simulator.requests(tag)[0]["body"]["tools"]] == [
        "order_status"]

