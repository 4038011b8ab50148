"""Clients that hold connections, on a real gunicorn gevent worker (issue 14).

Each test is a regression test for one way a client could hold a worker's connections or
greenlets: EventSource reconnecting to a finished stream, too many subscribers, a client that
never reads, a slow request body, a client that leaves while the upstream is being opened
(or retried), and a POST still opening its upstream when the worker is told to stop.
"""

from __future__ import annotations

import contextlib
import json
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from tests.integration.conftest import RillServer, ask, relay_env, run_rill, sim_model
from tests.sse_client import events_only, parse

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def _pair(env: dict[str, str], name: str, backend: str,
          request) -> Iterator[tuple[RillServer, RillServer]]:
    """Two instances sharing a Redis; for the memory hub, one instance standing for both."""
    with contextlib.ExitStack() as stack:
        if backend == "memory":
            a = stack.enter_context(run_rill(env, f"{name}-memory"))
            yield a, a
            return
        env = {**env, "RILL_REDIS_URL": request.getfixturevalue("redis_server").url}
        yield (stack.enter_context(run_rill(env, f"{name}-redis-a")),
               stack.enter_context(run_rill(env, f"{name}-redis-b")))


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_events_on_a_finished_stream_at_its_end_answer_204(simulator, backend,
                                                           request) -> None:
    """An EventSource that reconnected to a finished stream got 200 with an empty body, and
    so reconnected every 3 s forever; a 204 stops it (WHATWG HTML, server-sent events)."""
    with _pair(relay_env(simulator), "abuse-204", backend, request) as (a, b):
        with a.chat(ask(sim_model(tokens=3)[0])) as response:
            events = events_only(parse(response.iter_content(chunk_size=None)))
        assert events[-1].event == "done"
        stream_id, last = events[0].json["stream_id"], events[-1].id
        url = f"{b.url}/api/chat/{stream_id}/events"
        finished = requests.get(url, headers={"Last-Event-ID": last}, timeout=10)
        assert (finished.status_code, finished.content) == (204, b"")
        # Before the end there is still something to send.
        replay = requests.get(url, headers={"Last-Event-ID": str(int(last) - 1)}, timeout=10)
        assert replay.status_code == 200
        assert [e.event for e in events_only(parse([replay.content]))] == ["done"]


def _follow(url: str) -> requests.Response:
    """Open a subscription and read up to its first event, then hold it (its reader too: a
    reader left to the garbage collector would close the connection)."""
    response = requests.get(url, stream=True, timeout=10)
    if response.status_code == 200:
        response.events = parse(response.iter_content(chunk_size=None))  # type: ignore[attr-defined]
        next(e for e in response.events if not isinstance(e, str))  # type: ignore[attr-defined]
    return response


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_subscribers_per_client_are_capped_and_events_rate_limited(simulator, backend,
                                                                   request) -> None:
    """One client opened 400 subscribers to its own stream and filled the worker: GET /events
    had no cap per client and no rate limit. With Redis the cap is shared by instances."""
    env = relay_env(simulator, RILL_MAX_SUBSCRIBERS_PER_CLIENT="3",
                    RILL_ORPHAN_GRACE_SECONDS="30")
    with _pair(env, "abuse-subs", backend, request) as (a, b):
        model, _ = sim_model(tokens=10_000, itl_ms=20)
        post = a.chat(ask(model))
        stream_id = next(e for e in parse(post.iter_content(chunk_size=None))
                         if not isinstance(e, str)).json["stream_id"]
        path = f"/api/chat/{stream_id}/events"
        held = [_follow(f"{server.url}{path}") for server in (a, b, a)]
        assert [r.status_code for r in held] == [200, 200, 200]
        with requests.get(f"{b.url}{path}", stream=True, timeout=10) as refused:
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_subscribers"
            assert refused.headers["Retry-After"] == "5"
        held.pop().close()  # a closed tab frees its place
        deadline = time.monotonic() + 5
        while (again := _follow(f"{a.url}{path}")).status_code == 429:
            again.close()
            assert time.monotonic() < deadline, "a closed subscriber kept its place"
            time.sleep(0.1)
        held.append(again)
        for response in [*held, post]:
            response.close()
        requests.post(f"{a.url}/api/chat/{stream_id}/cancel", timeout=5)


def test_events_are_rate_limited_per_client(simulator) -> None:
    env = relay_env(simulator, RILL_RATELIMIT_ENABLED="true", RILL_EVENTS_RATE_LIMIT="3/minute")
    with run_rill(env, "abuse-events-rate") as server:
        with server.chat(ask(sim_model(tokens=2)[0])) as response:
            events = events_only(parse(response.iter_content(chunk_size=None)))
        url = f"{server.url}/api/chat/{events[0].json['stream_id']}/events"
        statuses = [requests.get(url, timeout=10).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]


def _metric(server, name: str) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=5).text
    values = [float(line.split()[-1]) for line in text.splitlines()
              if line.startswith(f"{name} ") or line.startswith(f"{name}{{")]
    return sum(values)


def _raw_post(url: str, body: dict, rcvbuf: int | None = None) -> socket.socket:
    """Send ``POST /api/chat`` on a raw socket (``rcvbuf``: a tiny receive buffer)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((host, int(port)))
    data = json.dumps(body).encode()
    sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(data), data))
    return sock


def _reset_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes or resets ``sock`` within ``seconds``, reading nothing."""
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _, flags in poller.poll(100):
            if flags & (select.POLLHUP | select.POLLERR | select.POLLRDHUP):
                return True
    return False


def test_a_client_that_never_reads_is_disconnected_after_the_send_timeout(simulator) -> None:
    """A client that never read kept its greenlet in sendall for 420 s and more after the
    generation ended (2.8 MB in its Send-Q), and no metric showed it."""
    env = relay_env(simulator, RILL_SEND_TIMEOUT_SECONDS="2", RILL_MAX_TOKENS="3000000")
    with run_rill(env, "abuse-never-reads") as server:
        model, tag = sim_model(tokens=3_000_000)
        sock = _raw_post(server.url, ask(model), rcvbuf=4096)
        try:
            simulator.wait_for(tag, lambda r: r["tokens_sent"] > 0, timeout=10)
            open_meanwhile = _metric(server, "rill_sse_connections")
            assert _reset_within(sock, 2 + 8), "the client was never disconnected"
        finally:
            sock.close()
        assert open_meanwhile == 1
        assert _metric(server, "rill_send_timeouts_total") == 1
        assert _metric(server, "rill_sse_connections") == 0
        record = simulator.wait_for(tag, lambda r: r["outcome"] != "running", timeout=10)
        assert record["outcome"] == "client_closed"  # orphaned, grace 0: upstream closed
        assert record["tokens_sent"] < 3_000_000


def _read_all(sock: socket.socket, seconds: float) -> bytes:
    """What the peer sends until it closes (or ``seconds`` pass)."""
    sock.settimeout(seconds)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_slow_request_bodies_get_408_and_free_the_worker(simulator) -> None:
    """300 bodies sent a byte every 13 s filled a 300-connection worker for over 65 s and
    /healthz timed out: the body was read with no time limit."""
    env = relay_env(simulator, RILL_BODY_TIMEOUT_SECONDS="1", RILL_WORKER_CONNECTIONS="50")
    with run_rill(env, "abuse-slow-body") as server:
        host, port = server.url.removeprefix("http://").split(":")
        slow = []
        for _ in range(50):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
            slow.append(sock)
        try:
            started = time.monotonic()
            while time.monotonic() - started < 1.5:  # past the deadline, a byte every 0.3 s:
                for sock in slow:                     # a per-read timeout would never fire
                    with contextlib.suppress(OSError):
                        sock.send(b" ")
                time.sleep(0.3)
            assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
            answers = [_read_all(sock, 10) for sock in slow]
            waited = time.monotonic() - started
        finally:
            for sock in slow:
                sock.close()
        for answer in answers:
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408"), answer[:200]
            assert json.loads(body)["error"]["code"] == "request_timeout"
        assert waited < 1 + 8, "the connections were not closed soon after the deadline"


def test_a_long_upstream_retry_after_is_passed_on_not_waited_for(simulator) -> None:
    """With the upstream's Retry-After at 59 s, the SDK waited 59 s between retries and the
    client got no byte meanwhile."""
    model, tag = sim_model(fault="status", status=429, retry_after=59, fail_first=2, tokens=3)
    with run_rill(relay_env(simulator, RILL_UPSTREAM_MAX_RETRIES="2"), "abuse-retry-after") \
            as server, server.chat(ask(model), timeout=10) as response:
        assert response.status_code == 429
        assert response.json()["error"]["code"] == "upstream_rate_limited"
        assert response.headers["Retry-After"] == "59"
    assert len(simulator.requests(tag)) == 1


@pytest.mark.parametrize("scenario", ["retrying", "waiting_for_headers"])
def test_a_client_that_leaves_while_the_upstream_is_opened_stops_it(simulator,
                                                                     scenario) -> None:
    """A client that left while Rill waited for the upstream went unnoticed: the SDK went on
    retrying (twice more), or waited for the status line until the read timeout."""
    if scenario == "retrying":
        model, tag = sim_model(fault="status", status=503, retry_after=2, fail_first=5)
    else:
        model, tag = sim_model(fault="hang")
    env = relay_env(simulator, RILL_UPSTREAM_MAX_RETRIES="2", RILL_STALL_TIMEOUT_SECONDS="30")
    with run_rill(env, f"abuse-leave-{scenario}") as server:
        sock = _raw_post(server.url, ask(model))
        simulator.wait_for(tag, lambda r: True, timeout=10)
        sock.close()
        if scenario == "retrying":
            time.sleep(2 * 2 + 1)  # past two retries' waits
            assert len(simulator.requests(tag)) == 1, "retried for a client that left"
        else:
            record = simulator.wait_for(tag, lambda r: r["outcome"] != "running", timeout=3)
            assert record["outcome"] == "client_closed"
            time.sleep(1)  # past a retry's first backoff (0.5 s)
            assert len(simulator.requests(tag)) == 1, "the leave was taken for a network error"
        assert "499" in server.log()


def test_sigterm_answers_a_post_still_waiting_for_upstream_headers(simulator) -> None:
    """A POST still waiting for the upstream's status line at SIGTERM got a TCP reset; and the
    shutdown event promised a resume that could not happen, the generation being stopped."""
    env = relay_env(simulator, RILL_GRACEFUL_TIMEOUT="3", RILL_STALL_TIMEOUT_SECONDS="30")
    hanging, tag = sim_model(fault="hang")
    with run_rill(env, "abuse-drain") as server:
        streaming = server.chat(ask(sim_model(tokens=1000, itl_ms=50)[0]))  # outlasts 3 s
        answers: list[requests.Response | requests.RequestException] = []

        def post() -> None:
            try:
                answers.append(server.chat(ask(hanging)))
            except requests.RequestException as exc:  # a reset, before the fix
                answers.append(exc)

        waiting = threading.Thread(target=post)
        waiting.start()
        simulator.wait_for(tag, lambda r: True, timeout=10)
        server.process.send_signal(signal.SIGTERM)
        waiting.join(timeout=20)
        with streaming:
            events = events_only(parse(streaming.iter_content(chunk_size=None)))
        server.process.wait(timeout=15)
    answer = answers[0]
    assert isinstance(answer, requests.Response), f"the POST got no HTTP answer: {answer!r}"
    with answer:
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "unavailable"
        assert answer.headers["Retry-After"] == "1"
    assert simulator.find(tag)["outcome"] == "client_closed"  # the upstream request closed
    shutdown = events[-1]
    assert (shutdown.event, shutdown.json["code"]) == ("error", "shutdown")
    assert "resume" not in shutdown.json["message"]
    assert "incomplete" in shutdown.json["message"]
