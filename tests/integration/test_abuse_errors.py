"""Issue 14, hostile and broken inputs on a real gunicorn gevent worker: errors that were
500s or lied, Redis outages, secrets in logs, the orphan grace, and the cost defaults."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.integration.conftest import ask, relay_env, run_rill, sim_model
from tests.sse_client import events_only, parse

pytestmark = pytest.mark.integration


def raw_request(url: str, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` as is to the server at ``url``; return what it answers until it closes
    (or ``timeout``)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(data)
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and answer.endswith(b"}\n"):
                break
    return answer


def error_of(response: requests.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["code"]


# Item 11: inputs that were answered 500 (or an `internal` stream error).


def test_es256_token_against_an_rs256_key_is_a_401(simulator) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    token = jwt.encode({"sub": "mallory", "exp": int(time.time()) + 600},
                       ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    env = relay_env(simulator, RILL_AUTH="jwt", RILL_JWT_PUBLIC_KEY=pem.decode())
    with run_rill(env, "abuse-es256") as server:
        response = requests.post(f"{server.url}/api/chat", json=ask("sim"), timeout=10,
                                 headers={"Authorization": f"Bearer {token}"})
        assert error_of(response) == (401, "unauthorized")
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        assert "Traceback" not in server.log()


def test_malformed_chunked_body_is_a_400(simulator) -> None:
    with run_rill(relay_env(simulator), "abuse-chunked") as server:
        host = urlsplit(server.url).netloc
        answer = raw_request(server.url, (
            f"POST /api/chat HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\nZZZ\r\n{}\r\n0\r\n\r\n").encode())
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b'"code":"invalid_body"' in answer
        assert "Traceback" not in server.log()


def test_garbage_forwarded_for_on_metrics_is_a_404(simulator) -> None:
    with run_rill(relay_env(simulator, RILL_PROXY_HOPS="1"), "abuse-xff") as server:
        response = requests.get(f"{server.url}/metrics", timeout=10,
                                headers={"X-Forwarded-For": "garbage"})
        assert response.status_code == 404
        forwarded = requests.get(f"{server.url}/metrics", timeout=10,
                                 headers={"X-Forwarded-For": "127.0.0.1"})
        assert forwarded.status_code == 200
        assert "Traceback" not in server.log()


def test_out_of_range_last_event_id_on_the_redis_hub_is_a_400(simulator, redis_server) -> None:
    env = relay_env(simulator, RILL_REDIS_URL=redis_server.url,
                    RILL_ORPHAN_GRACE_SECONDS="30")
    with run_rill(env, "abuse-last-id") as server:
        model, _ = sim_model(tokens=3)
        with server.chat(ask(model)) as response:
            events = events_only(parse(response.iter_content(chunk_size=None)))
        stream_id = events[0].json["stream_id"]
        url = f"{server.url}/api/chat/{stream_id}/events"
        for value in (str(2**64), str(2**63), "1" + "0" * 18, "-2", "+1", "1_0", "\u0661"):
            response = requests.get(url, headers={"Last-Event-ID": value.encode()},
                                    timeout=10)
            assert error_of(response) == (400, "invalid_last_event_id"), value
        largest = requests.get(url, headers={"Last-Event-ID": "9" * 18}, timeout=10)
        assert largest.status_code == 204  # the largest id is taken: nothing follows it
        replay = events_only(parse([requests.get(url, headers={"Last-Event-ID": "1"},
                                                 timeout=10).content]))
        assert [e.id for e in replay] == [str(i) for i in range(2, len(events))]


def test_method_not_allowed_under_the_api_keeps_allow(simulator) -> None:
    with run_rill(relay_env(simulator), "abuse-405") as server:
        response = requests.get(f"{server.url}/api/chat", timeout=10)
        assert error_of(response) == (405, "method_not_allowed")
        assert "POST" in response.headers["Allow"]
        cancel = requests.get(f"{server.url}/api/chat/{'x' * 22}/cancel", timeout=10)
        assert cancel.status_code == 405 and "POST" in cancel.headers["Allow"]


# Item 17: forwarded headers and subjects that were believed.


def test_without_proxy_hops_gunicorn_ignores_forwarded_proto_from_loopback(simulator) -> None:
    with run_rill(relay_env(simulator), "abuse-proto") as server:
        response = requests.get(f"{server.url}/", timeout=10, allow_redirects=False,
                                headers={"Host": "rill.example", "X-Forwarded-Proto": "https"})
        assert response.status_code == 308, "a plain-HTTP request is not https by a header"
        assert response.headers["Location"].startswith("https://rill.example/")
        assert "Strict-Transport-Security" not in response.headers
    with run_rill(relay_env(simulator, RILL_PROXY_HOPS="1"), "abuse-proto-hop") as server:
        response = requests.get(f"{server.url}/", timeout=10, allow_redirects=False,
                                headers={"Host": "rill.example", "X-Forwarded-Proto": "https"})
        assert response.status_code == 200, "behind one trusted proxy, it is"


def test_jwt_without_a_usable_subject_is_a_401(simulator) -> None:
    secret = "abuse-jwt-secret-0123456789abcdef"
    env = relay_env(simulator, RILL_AUTH="jwt", RILL_JWT_SECRET=secret)
    with run_rill(env, "abuse-sub") as server:
        for subject in ("", "  ", 5, None):
            claims = {"exp": int(time.time()) + 600, "sub": subject}
            token = jwt.encode({k: v for k, v in claims.items() if v is not None}, secret)
            model, _ = sim_model(tokens=3)
            response = requests.post(f"{server.url}/api/chat", json=ask(model), timeout=10,
                                     headers={"Authorization": f"Bearer {token}"})
            assert error_of(response) == (401, "unauthorized"), subject
        token = jwt.encode({"exp": int(time.time()) + 600, "sub": "alice"}, secret)
        with server.chat(ask(sim_model(tokens=3)[0]),
                         headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status_code == 200


# Item 16: cost defaults.


def test_max_tokens_and_the_model_default_to_the_operators_settings(simulator) -> None:
    model, tag = sim_model(tokens=20)
    env = relay_env(simulator, RILL_MODEL=model, RILL_MODELS="", RILL_MAX_TOKENS="7")
    with run_rill(env, "abuse-defaults") as server:
        body = {"messages": [{"role": "user", "content": "Hi"}]}
        with server.chat(body) as response:
            events = events_only(parse(response.iter_content(chunk_size=None)))
        assert events[-1].json["finish_reason"] == "length"
        assert simulator.find(tag)["body"]["max_tokens"] == 7, "the cap is sent upstream"
        other, other_tag = sim_model(tokens=3)
        refused = server.chat({**body, "model": other})
        assert error_of(refused) == (400, "invalid_model"), "only RILL_MODEL is offered"
        assert simulator.find(other_tag) is None


# Item 14: the orphan grace counts from the last leave.


def test_orphan_grace_counts_from_the_last_leave_after_a_resume(simulator) -> None:
    grace = 4.0
    env = relay_env(simulator, RILL_ORPHAN_GRACE_SECONDS=str(grace))
    with run_rill(env, "abuse-orphan") as server:
        model, tag = sim_model(tokens=2000, itl_ms=20)
        first = take(server.chat(ask(model)), 2)  # the first leave
        time.sleep(1.0)
        stream_id = first[0].json["stream_id"]
        response = requests.get(f"{server.url}/api/chat/{stream_id}/events", stream=True,
                                headers={"Last-Event-ID": first[-1].id}, timeout=30)
        take(response, 60)  # resumed for over a second, then the second leave
        left = time.monotonic()
        record = simulator.wait_for(tag, lambda r: r["outcome"] == "client_closed",
                                    timeout=grace + 5)
        waited = time.monotonic() - left
    assert record["tokens_sent"] < 2000
    assert grace - 0.5 < waited < grace + 3, f"cancelled {waited:.1f} s after the last leave"


def take(response: requests.Response, deltas: int) -> list:
    """Read events until ``deltas`` deltas (or the end), then drop the connection."""
    seen = []
    with response:
        assert response.status_code == 200, response.text
        for item in parse(response.iter_content(chunk_size=None)):
            if not isinstance(item, str):
                seen.append(item)
                if sum(e.event == "delta" for e in seen) >= deltas or \
                        item.event in ("done", "error"):
                    break
    return seen


# Item 13: secrets in tracebacks and extra fields.


def test_no_secret_in_a_traceback_an_extra_field_or_an_upstream_error(simulator) -> None:
    from tests.integration.conftest import API_KEY, free_port

    port = free_port()
    upstream = subprocess.Popen([sys.executable, str(Path(__file__).with_name(
        "echo_upstream.py")), str(port)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/", timeout=1)
            break
        time.sleep(0.05)
    jwt_secret = "jwt-secret-not-shaped-like-one-4711"
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 600}, "k" * 32)
    env = relay_env(simulator, OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1",
                    RILL_JWT_SECRET=jwt_secret, LEAKY_TOKEN=token)
    try:
        with run_rill(env, "abuse-leaks", target="tests.integration.leaky_app:app") as server:
            refused = server.chat(ask("sim"))
            assert error_of(refused) == (502, "upstream_auth")
            assert requests.get(f"{server.url}/_test/raise", timeout=10).status_code == 500
            assert requests.get(f"{server.url}/_test/log", timeout=10).status_code == 200
            time.sleep(0.3)
            log = server.log()
    finally:
        upstream.terminate()
        upstream.wait()
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert any("Incorrect API key: Bearer [redacted]" in line["message"] for line in lines)
    [traceback] = [line for line in lines if "Exception on /_test/raise" in line["message"]]
    assert "RuntimeError: refused [redacted]" in traceback["exc_info"]
    [extras] = [line for line in lines if line["message"] == "a record with extras"]
    assert extras["headers"] == {"authorization": "Bearer [redacted]"}
    assert extras["keys"] == ["[redacted]", {"deep": "[redacted]"}]
    assert any("ValueError: bad key [redacted]" in line.get("exc_info", "") for line in lines)
    for secret in (API_KEY, jwt_secret, token):
        assert secret not in log, "a secret reached the log"


# Item 12: Redis outages are quick to report, visible to probes, and counted as such.


def test_hung_redis_gives_quick_503s_an_unready_probe_and_hub_outcomes(simulator) -> None:
    """A Redis Cluster that hangs takes longer: a call waits for its node, then for each
    startup node as redis-py reloads the slots ((1 + nodes) x RILL_REDIS_TIMEOUT_SECONDS)."""
    from tests.conftest import RedisServer

    redis = RedisServer()

    def hang(sig: int) -> None:  # SIGSTOP: connects, never answers; SIGCONT: back
        redis.process.send_signal(sig)

    env = relay_env(simulator, RILL_REDIS_URL=redis.url, RILL_MAX_STREAMS_PER_CLIENT="4",
                    RILL_RATELIMIT_ENABLED="true", RILL_RATE_LIMIT="1000/minute")
    try:
        with run_rill(env, "abuse-outage") as server:
            ready = requests.get(f"{server.url}/readyz", timeout=10)
            assert (ready.status_code, ready.json()["hub"]) == (200, "ok")
            model, _ = sim_model(tokens=2000, itl_ms=20)
            response = server.chat(ask(model))
            items = parse(response.iter_content(chunk_size=None))
            next(i for i in items if not isinstance(i, str) and i.event == "delta")
            hang(signal.SIGSTOP)
            stopped = time.monotonic()
            cut = events_only(items)
            response.close()
            assert cut[-1].json["code"] == "hub_unavailable" and cut[-1].id is None
            assert time.monotonic() - stopped < 6, "the cut stream is told within seconds"

            started = time.monotonic()
            refused = server.chat(ask(sim_model(tokens=3)[0]))
            assert error_of(refused) == (503, "hub_unavailable")
            assert time.monotonic() - started < 7, "a POST is refused within seconds"
            started = time.monotonic()
            probe = requests.get(f"{server.url}/readyz", timeout=10)
            assert (probe.status_code, probe.json()["hub"]) == (503, "unavailable")
            assert time.monotonic() - started < 4

            hang(signal.SIGCONT)
            deadline = time.monotonic() + 10
            while requests.get(f"{server.url}/readyz", timeout=10).status_code != 200:
                assert time.monotonic() < deadline, "ready again once Redis is back"
                time.sleep(0.2)
            time.sleep(0.5)
            text = requests.get(f"{server.url}/metrics", timeout=10).text
            assert sample(text, 'rill_streams_total{outcome="hub_unavailable"}') >= 1
            assert sample(text, 'rill_streams_total{outcome="internal"}') == 0
        # Warnings, not a traceback per request (the rate limiter counts in memory meanwhile).
        assert "Traceback" not in server.log(), server.log()[-3000:]
    finally:
        hang(signal.SIGCONT)
        redis.stop()


def test_producer_lost_counts_once_per_stream(simulator, redis_server) -> None:
    env = relay_env(simulator, RILL_REDIS_URL=redis_server.url,
                    RILL_PRODUCER_LEASE_SECONDS="2", RILL_ORPHAN_GRACE_SECONDS="30")
    with run_rill(env, "abuse-lost-a") as a, run_rill(env, "abuse-lost-b") as b:
        model, _ = sim_model(tokens=2000, itl_ms=20)
        stream_id = take(a.chat(ask(model)), 2)[0].json["stream_id"]
        followers = [requests.get(f"{b.url}/api/chat/{stream_id}/events", stream=True,
                                  timeout=30) for _ in range(3)]
        streams = [parse(f.iter_content(chunk_size=None)) for f in followers]
        for items in streams:
            next(i for i in items if not isinstance(i, str) and i.event == "delta")
        with open(f"/proc/{a.process.pid}/task/{a.process.pid}/children") as children:
            workers = [int(pid) for pid in children.read().split()]
        for pid in [*workers, a.process.pid]:
            os.kill(pid, signal.SIGKILL)
        ends = [events_only(items)[-1] for items in streams]
        for follower in followers:
            follower.close()
        assert {e.json["code"] for e in ends} == {"producer_lost"}
        assert len({e.id for e in ends}) == 1, "one producer_lost, the same for all"
        time.sleep(0.3)
        text = requests.get(f"{b.url}/metrics", timeout=10).text
    assert sample(text, 'rill_streams_total{outcome="producer_lost"}') == 1


def sample(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0
