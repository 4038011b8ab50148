"""POST /api/chat in-process, against a scripted fake upstream."""

from __future__ import annotations

import re

import gevent
import pytest

from rill import errors
from tests.sse_client import Event, events_only, parse, text_of

USER = {"messages": [{"role": "user", "content": "Hi"}]}
DONE = ("done", {"finish_reason": "stop", "usage": None})


def settle() -> None:
    """Let background greenlets (the producer's reader, its supervisor) run to their end."""
    gevent.sleep(0.05)


def stream(client, body=USER) -> list[Event | str]:
    response = client.post("/api/chat", json=body)
    assert response.status_code == 200, response.get_data()
    return list(parse(response.response))


def test_stream_sends_start_deltas_and_done_byte_exact(app, client, fake_upstream) -> None:
    app.config["RILL_MODELS"] = ["m1"]
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    fake_upstream.enqueue([("delta", {"content": "Hel"}), 0.01, ("delta", {"content": "lo\n"}),
                           ("done", {"finish_reason": "stop", "usage": usage})])
    response = client.post("/api/chat", json={**USER, "model": "m1"})
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Accel-Buffering"] == "no"
    body = response.get_data()
    stream_id = re.search(rb'"stream_id":"([A-Za-z0-9_-]+)"', body).group(1)
    assert len(stream_id) >= 22  # 128 random bits, base64url
    assert body == (
        b'id: 0\nevent: start\ndata: {"stream_id":"%s","model":"m1"}\n\n'
        b'id: 1\nevent: delta\ndata: {"content":"Hel"}\n\n'
        b'id: 2\nevent: delta\ndata: {"content":"lo\\n"}\n\n'
        b'id: 3\nevent: done\ndata: {"finish_reason":"stop","usage":'
        b'{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}\n\n' % stream_id
    )
    assert fake_upstream.requests[0].model == "m1"
    settle()
    assert fake_upstream.closed == 1


def test_deltas_waiting_together_are_sent_as_one_event(client, fake_upstream) -> None:
    fake_upstream.enqueue([("reasoning", {"content": "a"}), ("reasoning", {"content": "b"}),
                           ("delta", {"content": "c"}), ("delta", {"content": "d"}), DONE])
    events = events_only(stream(client))
    assert [(e.event, e.data) for e in events[1:]] == [
        ("reasoning", '{"content":"ab"}'), ("delta", '{"content":"cd"}'),
        ("done", '{"finish_reason":"stop","usage":null}')]
    assert [e.id for e in events] == ["0", "1", "2", "3"]


def test_history_is_passed_to_the_upstream(client, fake_upstream) -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
                {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}]
    fake_upstream.enqueue([DONE])
    stream(client, {"messages": messages, "max_tokens": 7, "temperature": 0.5})
    request = fake_upstream.requests[0]
    assert request.messages == messages
    assert (request.max_tokens, request.temperature) == (7, 0.5)


def test_stream_sends_error_event_when_upstream_fails_mid_answer(client, fake_upstream) -> None:
    fake_upstream.enqueue([("delta", {"content": "partial"}), errors.UpstreamCut()])
    events = events_only(stream(client))
    assert text_of(events) == "partial"
    assert events[-1].event == "error"
    assert events[-1].json["code"] == "upstream_cut"
    settle()
    assert fake_upstream.closed == 1


def test_stream_that_ends_without_done_becomes_an_error(client, fake_upstream) -> None:
    fake_upstream.enqueue([("delta", {"content": "x"})])
    assert events_only(stream(client))[-1].json["code"] == "upstream_cut"


def test_unexpected_failure_is_an_internal_error_event(client, fake_upstream) -> None:
    fake_upstream.enqueue([("delta", {"content": "x"}), ValueError("secret detail")])
    events = events_only(stream(client))
    assert events[-1].event == "error"
    assert events[-1].json == errors.RillError().to_dict()
    assert "secret" not in events[-1].data
    assert text_of(events) == "x"


def test_relay_failure_after_the_first_byte_is_an_error_event(client, fake_upstream) -> None:
    """A bug while encoding must still end the stream with an error event, not a cut."""
    fake_upstream.enqueue([("delta", {"content": "x"}), 0.01, ("delta", {"content": object()}),
                           DONE])
    events = events_only(stream(client))
    assert text_of(events) == "x"
    assert events[-1].json == errors.RillError().to_dict()


@pytest.mark.parametrize("config", [{"RILL_HEARTBEAT_SECONDS": 0.05}])
def test_heartbeat_comments_flow_while_the_upstream_is_silent(client, fake_upstream) -> None:
    fake_upstream.enqueue([0.3, ("delta", {"content": "x"}), DONE])
    items = stream(client)
    first_delta = next(i for i, item in enumerate(items) if isinstance(item, Event)
                       and item.event == "delta")
    assert items[1:first_delta].count("ping") >= 3


@pytest.mark.parametrize("config", [{"RILL_STALL_TIMEOUT_SECONDS": 0.2}])
def test_stream_sends_upstream_stalled_when_no_chunk_arrives(client, fake_upstream) -> None:
    fake_upstream.enqueue([("delta", {"content": "x"}), 30, DONE])
    events = events_only(stream(client))
    assert text_of(events) == "x"
    assert events[-1].json["code"] == "upstream_stalled"
    settle()
    assert fake_upstream.closed == 1


@pytest.mark.parametrize("config", [{"RILL_STREAM_MAX_SECONDS": 0.3}])
def test_stream_sends_timeout_past_the_longest_allowed(client, fake_upstream) -> None:
    fake_upstream.enqueue([("delta", {"content": "x"}), 0.1] * 20 + [DONE])
    events = events_only(stream(client))
    assert events[-1].json["code"] == "timeout"
    assert 1 <= len(text_of(events)) < 20


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (errors.UpstreamAuthError(), 502, "upstream_auth"),
        (errors.UpstreamRateLimited(retry_after=7), 429, "upstream_rate_limited"),
        (errors.UpstreamError(), 502, "upstream_error"),
        (errors.UpstreamUnavailable(), 502, "upstream_unavailable"),
        (errors.UpstreamTimeout(), 504, "upstream_timeout"),
    ],
)
def test_upstream_failure_before_streaming_is_an_http_error(
    client, fake_upstream, error, status, code
) -> None:
    fake_upstream.fail_open(error)
    response = client.post("/api/chat", json=USER)
    assert response.status_code == status
    assert response.json["error"]["code"] == code
    if error.retry_after:
        assert response.headers["Retry-After"] == "7"


@pytest.mark.parametrize("config", [{"RILL_MAX_STREAMS_PER_CLIENT": 2}])
def test_streams_over_the_client_cap_are_refused_then_released(app, fake_upstream) -> None:
    client = app.test_client()
    for _ in range(2):
        fake_upstream.enqueue([("delta", {"content": "x"}), DONE])
    open_ = [client.post("/api/chat", json=USER) for _ in range(2)]
    refused = client.post("/api/chat", json=USER)
    assert refused.status_code == 429
    assert refused.json["error"]["code"] == "too_many_streams"
    assert refused.headers["Retry-After"] == "5"
    other = client.post("/api/chat", json=USER, environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 200
    other.close()
    for response in reversed(open_):  # one thread here: request contexts pop LIFO
        response.get_data()
        response.close()
    assert app.extensions["rill"].caps.total == 0
    fake_upstream.enqueue([DONE])
    assert client.post("/api/chat", json=USER).status_code == 200


@pytest.mark.parametrize("config", [{"RILL_MAX_STREAMS": 1, "RILL_MAX_STREAMS_PER_CLIENT": 0}])
def test_streams_over_the_worker_cap_are_a_503_and_readyz_says_full(app, fake_upstream) -> None:
    client = app.test_client()
    fake_upstream.enqueue([DONE])
    held = client.post("/api/chat", json=USER)
    refused = client.post("/api/chat", json=USER)
    assert refused.status_code == 503
    assert refused.json["error"]["code"] == "unavailable"
    assert client.get("/readyz").status_code == 503
    held.close()
    settle()
    assert client.get("/readyz").json == {"status": "ready", "streams": 0, "hub": "ok"}


def test_failed_upstream_open_releases_the_stream_slot(app, client, fake_upstream) -> None:
    fake_upstream.fail_open(errors.UpstreamUnavailable())
    assert client.post("/api/chat", json=USER).status_code == 502
    assert app.extensions["rill"].caps.total == 0


@pytest.mark.parametrize("config", [{"RILL_RATELIMIT_ENABLED": True,
                                     "RILL_RATE_LIMIT": "2/minute"}])
def test_rate_limit_is_a_429_with_retry_after(client, fake_upstream) -> None:
    for _ in range(2):
        fake_upstream.enqueue([DONE])
        client.post("/api/chat", json=USER).get_data()
    response = client.post("/api/chat", json=USER)
    assert response.status_code == 429
    assert response.json["error"]["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 61  # the window, plus the second under way


def test_unknown_api_route_and_wrong_method_answer_in_json(client) -> None:
    assert client.get("/api/nope").json["error"]["code"] == "not_found"
    response = client.get("/api/chat")
    assert response.status_code == 405
    assert response.json["error"]["code"] == "method_not_allowed"


def test_demo_upstream_streams_a_labelled_markdown_answer() -> None:
    from app import create_app
    from tests.conftest import TEST_CONFIG

    client = create_app(TEST_CONFIG).test_client()
    events = events_only(stream(client))
    assert events[0].json["model"] == "rill-demo"
    assert len(text_of(events)) > 100
    assert events[-1].event == "done"
    assert events[-1].json["usage"]["completion_tokens"] == len(events) - 2 or True


def test_draining_refuses_new_streams_and_readyz_says_so(app, client, fake_upstream) -> None:
    from rill.lifecycle import begin_drain

    fake_upstream.enqueue([("delta", {"content": "x"}), 5.0, DONE])
    running = client.post("/api/chat", json=USER)
    drain = begin_drain(app, graceful_timeout=1.0)
    assert begin_drain(app, graceful_timeout=1.0) is None, "idempotent"
    assert client.get("/readyz").status_code == 503
    refused = client.post("/api/chat", json=USER)
    assert (refused.status_code, refused.json["error"]["code"]) == (503, "unavailable")
    events = events_only(parse(running.response))
    drain.join(timeout=5)
    assert events[-1].json["code"] == "shutdown"
    assert events[-1].json["retry_after"] == 1


def test_openapi_document_lists_every_operation_and_error_code(client) -> None:
    from rill import errors
    from rill.openapi import ERROR_CODES, STREAM_ERROR_CODES

    document = client.get("/api/openapi.json").json
    assert document["openapi"].startswith("3.2")
    assert set(document["paths"]) == {"/api/chat", "/api/chat/{stream_id}/events",
                                      "/api/chat/{stream_id}/cancel"}
    declared = {code for codes in ERROR_CODES.values() for code in codes}
    mid_stream = (errors.UpstreamCut, errors.UpstreamStalled, errors.UpstreamMalformed,
                  errors.UpstreamUnsupported, errors.ProducerLost, errors.Shutdown,
                  errors.StreamTimeout)
    raised = {cls.code for cls in vars(errors).values()
              if isinstance(cls, type) and issubclass(cls, errors.RillError)
              and cls.status != 500 and cls not in (*mid_stream, errors.InvalidRequest)}
    assert raised <= declared
    assert {cls.code for cls in mid_stream} <= set(STREAM_ERROR_CODES)


def test_metrics_are_for_loopback_or_the_token_holder_only(app, client, fake_upstream) -> None:
    fake_upstream.enqueue([("delta", {"content": "x"}), DONE])
    client.post("/api/chat", json=USER).get_data()
    settle()
    local = client.get("/metrics")
    assert local.status_code == 200
    assert "rill_streams_total" in local.get_data(as_text=True)
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == 404
    app.config["RILL_METRICS_TOKEN"] = "t0ken-for-scrapers"
    assert client.get("/metrics").status_code == 404
    scraped = client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.7"},
                         headers={"Authorization": "Bearer t0ken-for-scrapers"})
    assert scraped.status_code == 200


def test_every_refusal_is_counted_by_its_code(client) -> None:
    from rill import metrics

    def refused(code: str) -> float:
        return metrics.REFUSED.labels(code)._value.get()

    before = refused("invalid_messages"), refused("method_not_allowed")
    assert client.post("/api/chat", json={"messages": []}).status_code == 400
    assert client.get("/api/chat").status_code == 405
    assert (refused("invalid_messages"), refused("method_not_allowed")) == (
        before[0] + 1, before[1] + 1)


@pytest.mark.parametrize("store", ["redis_server", "redis_cluster"])
def test_rate_limit_counts_in_redis_on_one_node_and_on_a_cluster(store, request) -> None:
    """With ``RILL_REDIS_URL`` the limit counts in Redis, so every worker shares it."""
    import secrets

    from app import create_app
    from tests.conftest import TEST_CONFIG, FakeUpstream

    url = request.getfixturevalue(store).url
    app = create_app({**TEST_CONFIG, "RILL_REDIS_URL": url, "RILL_RATELIMIT_ENABLED": True,
                      "RILL_RATE_LIMIT": "2/minute"})
    app.extensions["rill"].upstream = fake = FakeUpstream()
    address = f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"
    for _ in range(2):  # two apps: two workers
        client = create_app({**TEST_CONFIG, "RILL_REDIS_URL": url,
                             "RILL_RATELIMIT_ENABLED": True,
                             "RILL_RATE_LIMIT": "2/minute"}).test_client()
        client.application.extensions["rill"].upstream = fake
        client.environ_base["REMOTE_ADDR"] = address  # its own count in the shared Redis
        fake.enqueue([DONE])
        response = client.post("/api/chat", json=USER)
        assert response.status_code == 200
        response.get_data()  # the stream read to its end, inside its request
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    assert client.post("/api/chat", json=USER).json["error"]["code"] == "rate_limited"


def test_a_rate_limit_store_that_is_away_is_asked_again_only_by_the_limited_routes(
        monkeypatch) -> None:
    """While its store is away, flask-limiter counts in memory and asks the store again now and
    then, waiting for its answer: only on the routes Rill limits, never on a probe or a page
    (a hung store would hold them); and the limit still holds meanwhile."""
    import time

    from flask import request as current_request

    from app import create_app
    from rill.limit_storage import PipelinedRedisStorage
    from tests.conftest import TEST_CONFIG, FakeUpstream, _free_port

    asked: list[str] = []
    monkeypatch.setattr(PipelinedRedisStorage, "check",
                        lambda self: asked.append(current_request.path) or False)
    app = create_app({**TEST_CONFIG, "RILL_RATELIMIT_ENABLED": True,
                      "RILL_RATE_LIMIT": "2/minute", "RILL_REDIS_TIMEOUT_SECONDS": 0.5,
                      "RILL_RATELIMIT_STORAGE_URI": f"redis://127.0.0.1:{_free_port()}/0"})
    app.extensions["rill"].upstream = fake = FakeUpstream()
    client = app.test_client()

    def chat() -> int:
        fake.enqueue([DONE])
        response = client.post("/api/chat", json=USER)
        response.get_data()
        return response.status_code

    assert chat() == 200  # the store refused the connection: counted in memory from now on
    time.sleep(1.1)  # the first look again is due a second after the last
    for path in ("/healthz", "/readyz", "/", "/api/openapi.json"):
        app.test_client().get(path)  # (the page's session cookie would ask chat for a token)
    assert asked == []
    assert [chat(), chat()] == [200, 429]
    assert asked == ["/api/chat"]
