"""A legacy Flask app (Flask-Login, its own Limiter and Talisman) adopts Rill in a few lines
and runs on gunicorn's gevent worker."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests

from rill.simulator import expected_text
from tests.integration.conftest import ask, relay_env, run_rill, sim_model
from tests.sse_client import events_only, parse, text_of

pytestmark = pytest.mark.integration


def test_adoption_takes_at_most_five_lines() -> None:
    source = (Path(__file__).parents[1] / "legacy_app.py").read_text()
    adoption = source.split("# Adopting Rill:")[1].strip().splitlines()
    assert 0 < len(adoption) <= 5


WORKERS = {"gevent": (), "gthread": ("--worker-class", "gthread", "--threads", "8")}


@pytest.mark.parametrize("worker", WORKERS)
def test_legacy_users_stream_as_themselves_under_the_hosts_own_rules(simulator,
                                                                     worker) -> None:
    env = relay_env(simulator, RILL_RATE_LIMIT="4/minute", RILL_RATELIMIT_ENABLED="true")
    with run_rill(env, f"legacy-{worker}", args=WORKERS[worker],
                  target="tests.legacy_app:app", health="/assistant/healthz") as server:
        base = f"{server.url}/assistant/api/chat"
        anonymous = requests.post(base, json=ask("sim"), timeout=10)
        assert anonymous.status_code == 401

        alice, bob = requests.Session(), requests.Session()
        for session, name in ((alice, "alice"), (bob, "bob")):
            assert session.post(f"{server.url}/login/{name}", timeout=10).status_code == 200
            no_token = session.post(base, json=ask("sim"), timeout=10)
            assert no_token.json()["error"]["code"] == "csrf_failed", "cookies need the token"
            sign_in_page(session, server.url)
        model, _ = sim_model(tokens=5)
        with alice.post(base, json=ask(model), stream=True, timeout=30) as response:
            assert response.status_code == 200
            assert response.headers["X-Frame-Options"] == "SAMEORIGIN", "host's headers"
            events = events_only(parse(response.iter_content(chunk_size=None)))
        assert text_of(events) == expected_text(5)
        stream_id = events[0].json["stream_id"]
        assert bob.get(f"{base}/{stream_id}/events", timeout=10).status_code == 404
        assert alice.get(f"{base}/{stream_id}/events", timeout=10).status_code == 200

        assert requests.get(f"{server.url}/", timeout=10).text == "legacy home of None"
        page = alice.get(f"{server.url}/assistant/", timeout=10)
        assert page.status_code == 200
        scripts = re.findall(r'<script src="([^"]+)"', page.text)
        assert scripts and all(src.startswith("/assistant/rill-static/") for src in scripts)
        assert all(alice.get(f"{server.url}{src}", timeout=10).status_code == 200
                   for src in scripts)
        assert 'data-api-url="/assistant/api/chat"' in page.text
        statuses = [requests.get(f"{server.url}/limited", timeout=10).status_code
                    for _ in range(3)]
        assert statuses == [200, 200, 429], "the host's own limiter still applies"

        # Rill's limit (4/minute, per user) runs on the host's limiter.
        codes = []
        for _ in range(4):
            response = bob.post(base, json=ask(sim_model(tokens=1)[0]), timeout=30)
            codes.append(response.status_code)
        assert codes == [200, 200, 200, 200]
        refused = bob.post(base, json=ask("sim"), timeout=10)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert alice.post(base, json=ask(sim_model(tokens=1)[0]),
                          timeout=30).status_code == 200, "limits are per user"


@pytest.mark.parametrize("worker", WORKERS)
def test_cancel_and_resume_work_on_either_worker(simulator, worker) -> None:
    """A gthread worker runs the producer in threads; a cancel must still close the
    upstream at once, and a resume must replay exactly."""
    with run_rill(relay_env(simulator), f"legacy-cancel-{worker}", args=WORKERS[worker],
                  target="tests.legacy_app:app", health="/assistant/healthz") as server:
        alice = requests.Session()
        alice.post(f"{server.url}/login/alice", timeout=10)
        sign_in_page(alice, server.url)
        base = f"{server.url}/assistant/api/chat"
        model, tag = sim_model(tokens=500, itl_ms=20)
        with alice.post(base, json=ask(model), stream=True, timeout=30) as response:
            items = parse(response.iter_content(chunk_size=None))
            first = [next(i for i in items if not isinstance(i, str))]
            stream_id = first[0].json["stream_id"]
            assert alice.post(f"{base}/{stream_id}/cancel", timeout=10).status_code == 202
            events = first + events_only(items)
        assert events[-1].json["finish_reason"] == "cancelled"
        simulator.wait_for(tag, lambda r: r["outcome"] == "client_closed", timeout=3)
        replay = events_only(parse([alice.get(f"{base}/{stream_id}/events",
                                              timeout=10).content]))
        assert [(e.id, e.data) for e in replay] == [(e.id, e.data) for e in events]


def sign_in_page(session: requests.Session, url: str) -> None:
    """Load Rill's page as a browser would and send its CSRF token from then on."""
    page = session.get(f"{url}/assistant/", timeout=10).text
    session.headers["X-CSRFToken"] = re.search(r'name="csrf-token" content="([^"]+)"',
                                               page).group(1)
