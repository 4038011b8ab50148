"""Schemathesis fuzzes the live API from its own OpenAPI document, with every check on.

Each operation gets a bounded number of positive examples (valid by the document: each must be
accepted, with a documented status, content type, headers and body) and negative ones (invalid
by it: each must be refused with a 4xx). Against gunicorn relaying the simulator: never a 500,
never a hang, never a response the document does not describe. (Schemathesis's own pytest
plugin does not run on this pytest; its strategies are driven by hypothesis directly.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config._checks import (
    NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES,
    POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES,
)

from tests.integration.conftest import RillServer, relay_env, run_rill

pytestmark = pytest.mark.integration

OPERATIONS = ["POST /api/chat", "GET /api/chat/{stream_id}/events",
              "POST /api/chat/{stream_id}/cancel"]
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]


# RILL_MAX_BODY_BYTES is in bytes, which JSON Schema cannot state: 413 is a right answer to
# any body past it, valid by the document or not.
CONFIG = schemathesis.Config.from_dict({"checks": {
    "positive_data_acceptance": {
        "expected-statuses": [*POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, "413"]},
    "negative_data_rejection": {
        "expected-statuses": [*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]}}})


def every_check() -> list[schemathesis.CheckFunction]:
    load_all_checks()
    return list(CHECKS.get_all())


@pytest.fixture(scope="module")
def fuzz_server(simulator) -> Iterator[RillServer]:
    env = relay_env(simulator, RILL_MODEL="sim?tokens=3", RILL_STALL_TIMEOUT_SECONDS="5",
                    RILL_MAX_MESSAGES="8", RILL_MAX_MESSAGE_CHARS="2000")
    with run_rill(env, "fuzz") as server:
        yield server


@pytest.mark.parametrize("mode", MODES, ids=lambda mode: mode.value)
@pytest.mark.parametrize("label", OPERATIONS)
def test_api_conforms_to_its_document(fuzz_server, label, mode) -> None:
    schema = schemathesis.openapi.from_url(f"{fuzz_server.url}/api/openapi.json",
                                           config=CONFIG)
    operations = {op.ok().label: op.ok() for op in schema.get_all_operations()}
    assert set(operations) == set(OPERATIONS)
    checks = every_check()
    assert len(checks) >= 12, [check.__name__ for check in checks]
    statuses: list[int] = []

    session = requests.Session()  # one, closed below: a session per call leaks its socket

    @given(data=st.data())
    @settings(max_examples=50, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def check(data) -> None:
        case = data.draw(operations[label].as_strategy(generation_mode=mode))
        response = case.call(base_url=fuzz_server.url, session=session,
                             timeout=20)  # a hang fails here
        statuses.append(response.status_code)
        case.validate_response(response, checks=checks)
        if response.headers.get("Content-Type", "").startswith("text/event-stream"):
            body = response.text
            assert "event: done" in body or "event: error" in body, body[-500:]

    with session:
        check()
    assert len(statuses) >= 10
    if label == "POST /api/chat" and mode is schemathesis.GenerationMode.POSITIVE:
        assert 200 in statuses, "the fuzzer reached real streams, not only refusals"
