"""No secret ever leaves: a server with a known API key and JWT secret, driven through every
error path, shows neither (nor the client's token) in any response body or log line."""

from __future__ import annotations

import time

import jwt
import pytest
import requests

from tests.integration.conftest import API_KEY, ask, relay_env, run_rill, sim_model

pytestmark = pytest.mark.integration

JWT_SECRET = "jwt-secret-for-the-leak-test-0123456789"


def test_no_secret_reaches_a_response_or_a_log_line(simulator) -> None:
    good = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, JWT_SECRET)
    bad = jwt.encode({"sub": "alice", "exp": int(time.time()) - 600}, JWT_SECRET)
    forged = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, "x" * 32)
    env = relay_env(simulator, RILL_AUTH="jwt", RILL_JWT_SECRET=JWT_SECRET,
                    RILL_STALL_TIMEOUT_SECONDS="1")
    bodies: list[str] = []
    with run_rill(env, "secrets") as server:
        url = f"{server.url}/api/chat"
        for token in (None, bad, forged, "garbage"):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            bodies.append(requests.post(url, json=ask("sim"), headers=headers, timeout=10).text)
        auth = {"Authorization": f"Bearer {good}"}
        faults = [{"fault": "status", "status": s} for s in (401, 403, 404, 429, 500)]
        faults += [{"fault": "cut", "after": 2}, {"fault": "stall", "after": 1},
                   {"shape": "error_in_stream"}, {"tokens": 3}]
        for params in faults:
            model, _ = sim_model(**params)
            bodies.append(requests.post(url, json=ask(model), headers=auth, timeout=30).text)
        for bad_body in (b"{", b"[]", b'{"messages": 1}'):
            bodies.append(requests.post(url, data=bad_body, headers={
                **auth, "Content-Type": "application/json"}, timeout=10).text)
        bodies.append(requests.get(f"{url}/{'x' * 22}/events", headers=auth, timeout=10).text)
        bodies.append(requests.get(f"{server.url}/", timeout=10).text)
        log = server.log()
    for secret in (API_KEY, JWT_SECRET, good, bad, forged):
        assert not [b for b in bodies if secret in b], "a response carried a secret"
        assert secret not in log, "a log line carried a secret"
    assert "upstream answered HTTP 401" in log, "upstream errors are logged"
    assert any("upstream_auth" in b for b in bodies)
