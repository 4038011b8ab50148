"""Prometheus metrics summed across two gunicorn workers after a known workload."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.integration.conftest import ask, relay_env, run_rill, sim_model
from tests.sse_client import events_only, parse

pytestmark = pytest.mark.integration


def sample(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def test_metrics_add_up_across_two_workers(simulator, redis_server) -> None:
    env = relay_env(simulator, RILL_REDIS_URL=redis_server.url, WEB_CONCURRENCY="2",
                    RILL_METRICS_TOKEN="scrape-me")
    with run_rill(env, "metrics") as server:
        completed, pids = 0, set()
        with ThreadPoolExecutor(max_workers=6) as pool:
            # Overlapping batches until both workers have produced streams (their summary
            # log lines name the worker's pid), so the sums below really cross workers.
            while len(pids) < 2 and completed < 60:
                assert all(pool.map(lambda _: complete_one(server), range(6)))
                completed += 6
                time.sleep(0.3)  # the summary line is written as the producer finishes
                pids = {line["pid"] for line in map(json.loads, server.log().splitlines())
                        if line.get("event") == "stream_end"}
        assert len(pids) == 2, "the load landed on both workers"
        for _ in range(3):
            model, _ = sim_model(tokens=5, fault="cut", after=2)
            with server.chat(ask(model)) as response:
                assert events_only(parse(response.iter_content(chunk_size=None)))[-1].json[
                    "code"] == "upstream_cut"
        with server.chat(ask(sim_model(fault="status", status=401)[0])) as refused:
            assert refused.status_code == 502
        assert requests.get(f"{server.url}/metrics", timeout=5).status_code == 404, \
            "with a token set, only its holder may scrape"
        time.sleep(0.3)  # the last generation's producer records as it finishes
        text = requests.get(f"{server.url}/metrics", timeout=5,
                            headers={"Authorization": "Bearer scrape-me"}).text
    assert sample(text, "rill_streams_total", '{outcome="completed"}') == completed
    assert sample(text, "rill_streams_total", '{outcome="upstream_cut"}') == 3
    assert sample(text, "rill_tokens_total") == completed * 5 + 3 * 2
    assert sample(text, "rill_upstream_errors_total", '{code="upstream_cut"}') == 3
    assert sample(text, "rill_upstream_errors_total", '{code="upstream_auth"}') == 1
    assert sample(text, "rill_active_streams") == 0
    assert sample(text, "rill_ttft_seconds_count") == completed + 3


def complete_one(server) -> bool:
    model, _ = sim_model(tokens=5, itl_ms=50)
    with server.chat(ask(model)) as response:
        return events_only(parse(response.iter_content(chunk_size=None)))[-1].event == "done"
