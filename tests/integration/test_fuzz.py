"""Schemathesis fuzzes the live API from its own OpenAPI document: never a 500, never a hang.

A bounded number of examples per operation, against gunicorn relaying the simulator.
(Schemathesis's own pytest plugin does not run on this pytest; its strategies are driven by
hypothesis directly.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import RillServer, relay_env, run_rill

pytestmark = pytest.mark.integration

OPERATIONS = ["POST /api/chat", "GET /api/chat/{stream_id}/events",
              "POST /api/chat/{stream_id}/cancel"]


@pytest.fixture(scope="module")
def fuzz_server(simulator) -> Iterator[RillServer]:
    env = relay_env(simulator, RILL_MODEL="sim?tokens=3", RILL_STALL_TIMEOUT_SECONDS="5")
    with run_rill(env, "fuzz") as server:
        yield server


@pytest.mark.parametrize("label", OPERATIONS)
def test_api_never_answers_500_or_hangs(fuzz_server, label) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/api/openapi.json")
    operations = {op.ok().label: op.ok() for op in schema.get_all_operations()}
    assert set(operations) == set(OPERATIONS)
    statuses: list[int] = []

    session = requests.Session()  # one, closed below: a session per call leaks its socket

    @given(data=st.data())
    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(data) -> None:
        case = data.draw(operations[label].as_strategy())
        response = case.call(base_url=fuzz_server.url, session=session,
                             timeout=20)  # a hang fails here
        statuses.append(response.status_code)
        assert response.status_code != 500, response.text[:500]
        if response.headers.get("Content-Type", "").startswith("text/event-stream"):
            body = response.text
            assert "event: done" in body or "event: error" in body, body[-500:]

    with session:
        check()
    assert len(statuses) >= 10
    if label == "POST /api/chat":
        assert 200 in statuses, "the fuzzer reached real streams, not only refusals"
