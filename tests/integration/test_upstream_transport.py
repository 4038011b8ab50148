"""The upstream transport in a real Rill: the environment's proxy variables are honoured."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from rill.simulator import expected_text
from tests.integration.conftest import ask, relay_env, run_rill, sim_model
from tests.integration.forward_proxy import running as forward_proxy_running
from tests.integration.forward_proxy import unset_proxy_variables
from tests.sse_client import events_only, parse, text_of

pytestmark = pytest.mark.integration


@pytest.fixture
def forward_proxy(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A forward proxy on 127.0.0.1: its URL, and the log of the request lines it received."""
    log = tmp_path / "proxy.log"
    with forward_proxy_running(log) as url:
        yield url, log


@pytest.mark.parametrize(("variable", "no_proxy", "proxied"), [
    ("HTTP_PROXY", "", True),
    ("http_proxy", "localhost", True),  # a common NO_PROXY: it does not cover 127.0.0.1
    ("ALL_PROXY", "", True),
    ("HTTP_PROXY", "localhost,127.0.0.1", False),
])
def test_the_environment_s_proxy_carries_the_upstream_requests(
        simulator, forward_proxy, monkeypatch, variable: str, no_proxy: str,
        proxied: bool) -> None:
    proxy_url, log = forward_proxy
    unset_proxy_variables(monkeypatch)
    env = relay_env(simulator, **{variable: proxy_url, "NO_PROXY": no_proxy})
    # One session, closed before Rill stops (a kept-alive connection would hold it 5 s).
    with run_rill(env, "proxied") as rill, requests.Session() as client:
        for _ in range(2):
            model, tag = sim_model(tokens=5)
            with client.post(f"{rill.url}/api/chat", json=ask(model), stream=True,
                             timeout=30) as response:
                assert response.status_code == 200, response.text
                events = events_only(list(parse(response.iter_content(chunk_size=None))))
            assert text_of(events) == expected_text(5)
            assert events[-1].event == "done"
            assert simulator.find(tag)["outcome"] == "completed"
    upstream = f"POST {simulator.base_url}/chat/completions HTTP/1.1"
    assert log.read_text().splitlines() == ([upstream] * 2 if proxied else [])
