"""Clients that hold connections, on a real gunicorn gevent worker (issue 14).

Each test is a regression test for one way a client could hold a worker's connections or
greenlets: EventSource reconnecting to a finished stream, too many subscribers, a client that
never reads, a slow request body, a client that leaves while the upstream is being opened
(or retried), and a POST still opening its upstream when the worker is told to stop.
"""

from __future__ import annotations

import requests
import pytest

from tests.integration.conftest import ask, relay_env, run_rill, sim_model
from tests.sse_client import events_only, parse

pytestmark = pytest.mark.integration


def test_events_on_a_finished_stream_at_its_end_answer_204(simulator) -> None:
    """An EventSource that reconnected to a finished stream got 200 with an empty body, and
    so reconnected every 3 s forever; a 204 stops it (WHATWG HTML, server-sent events)."""
    with run_rill(relay_env(simulator), "abuse-204") as server:
        with server.chat(ask(sim_model(tokens=3)[0])) as response:
            events = events_only(parse(response.iter_content(chunk_size=None)))
        assert events[-1].event == "done"
        stream_id, last = events[0].json["stream_id"], events[-1].id
        url = f"{server.url}/api/chat/{stream_id}/events"
        for after in (last, str(int(last) + 5)):
            finished = requests.get(url, headers={"Last-Event-ID": after}, timeout=10)
            assert (finished.status_code, finished.content) == (204, b"")
        # Before the end there is still something to send.
        replay = requests.get(url, headers={"Last-Event-ID": str(int(last) - 1)}, timeout=10)
        assert replay.status_code == 200
        assert [e.event for e in events_only(parse([replay.content]))] == ["done"]
