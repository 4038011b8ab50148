"""Rill behind Debian's nginx running deploy/nginx/rill.conf, relaying the simulator.

nginx runs the shipped sample with only its ``# EDIT`` lines rewritten (upstream address,
listen ports, a throwaway certificate for 127.0.0.1), as a foreground process with its pid,
temp files and logs in a temporary prefix and tests/artifacts/. The client speaks HTTPS to
nginx, as a browser would.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from rill.simulator import expected_text
from tests.integration.conftest import (
    ARTIFACTS,
    RillServer,
    ask,
    free_port,
    relay_env,
    run_rill,
    sim_model,
)
from tests.sse_client import Event, events_only, parse, text_of
from tests.test_deploy import nginx_binary, nginx_main_conf, nginx_site, self_signed_cert

needs_nginx = pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed "
                                 "(.ci/run installs Debian's)")
pytestmark = [pytest.mark.integration, needs_nginx]


@dataclass
class Nginx:
    url: str  # https://127.0.0.1:<port>
    http_url: str  # the plain-HTTP server, which only redirects
    ca: Path  # the certificate to verify it with
    process: subprocess.Popen
    error_log: Path

    def post(self, body: dict, **kwargs) -> requests.Response:
        return requests.post(f"{self.url}/api/chat", json=body, stream=True, verify=self.ca,
                             timeout=kwargs.pop("timeout", 30), **kwargs)


@contextmanager
def run_nginx(rill: RillServer, site: Callable[[int, int, Path, Path], str] | None = None
              ) -> Iterator[Nginx]:
    """Start nginx in front of ``rill`` on free loopback ports; kill it after. ``site``
    (HTTP port, HTTPS port, certificate, key: the text of the site) replaces the shipped
    sample, which serves ``rill``; nginx counts as started once the HTTP port listens."""
    nginx = nginx_binary()
    assert nginx is not None
    http_port, https_port = free_port(), free_port()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rill-nginx-") as temp:
        prefix = Path(temp)
        # As root, nginx's workers run as nobody: let them reach their temp folders in here.
        prefix.chmod(0o711)
        cert, key = self_signed_cert(prefix)
        site_file = prefix / "rill.conf"
        site_file.write_text(site(http_port, https_port, cert, key) if site else nginx_site(
            rill.url.removeprefix("http://"), http_port, https_port, cert, key))
        conf = prefix / "nginx.conf"
        name = f"nginx-{https_port}"
        conf.write_text(nginx_main_conf(prefix, site_file, ARTIFACTS, name))
        error_log = ARTIFACTS / f"{name}-error.log"
        with open(ARTIFACTS / f"{name}-stderr.log", "wb") as stderr:
            process = subprocess.Popen(
                [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(error_log)],
                stdin=subprocess.DEVNULL, stdout=stderr, stderr=subprocess.STDOUT)
        try:
            _wait_listening(process, http_port if site else https_port, error_log)
            yield Nginx(f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}",
                        cert, process, error_log)
        finally:
            process.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_listening(process: subprocess.Popen, port: int, error_log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = error_log.read_text() if error_log.exists() else ""
            raise RuntimeError(f"nginx exited with {process.returncode}:\n{log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nginx did not start listening")


@pytest.fixture(scope="module")
def front(simulator) -> Iterator[tuple[Nginx, RillServer]]:
    """nginx in front of one gunicorn gevent worker that trusts it (RILL_PROXY_HOPS=1).

    Heartbeats every 10 s and a stall timeout above 90 s, for the silent-stream test.
    """
    env = relay_env(simulator, RILL_PROXY_HOPS="1", RILL_HEARTBEAT_SECONDS="10",
                    RILL_STALL_TIMEOUT_SECONDS="120")
    with run_rill(env, "nginx-relay") as rill, run_nginx(rill) as nginx:
        yield nginx, rill


def assert_event_stream_headers(response: requests.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert "Content-Length" not in response.headers
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Encoding" not in response.headers, "events must not be gzipped"
    assert response.headers["Cache-Control"] == "no-store"


def test_first_delta_passes_nginx_while_the_upstream_is_still_streaming(front,
                                                                         simulator) -> None:
    nginx, rill = front
    model, tag = sim_model(tokens=10, itl_ms=150)
    # As the page sends it: its own origin, and gzip welcome; and a request id of its own,
    # which nginx replaces with its $request_id (only the proxy's id is believed).
    headers = {"Origin": nginx.url, "Accept-Encoding": "gzip, deflate",
               "X-Request-ID": "chosen-by-the-client"}
    with nginx.post(ask(model), headers=headers) as response:
        assert_event_stream_headers(response)
        request_id = response.headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id
        # Rill saw https through X-Forwarded-Proto (HSTS is sent on https only).
        assert "Strict-Transport-Security" in response.headers
        items = parse(response.iter_content(chunk_size=None))
        first = next(i for i in items if isinstance(i, Event) and i.event == "delta")
        assert simulator.find(tag)["outcome"] == "running", "nginx buffered the stream"
        rest = events_only(items)
    assert first.json["content"] + text_of(rest) == expected_text(10)
    assert (rest[-1].event, rest[-1].json["finish_reason"]) == ("done", "stop")
    deadline = time.monotonic() + 5  # gunicorn writes the access line after the last byte
    while not (access := [line for line in map(json.loads, rill.log().splitlines())
                          if line.get("request_id") == request_id
                          and line["logger"] == "gunicorn.access"]):
        assert time.monotonic() < deadline, "Rill logged the request under nginx's id"
        time.sleep(0.05)
    assert access[0]["remote_addr"] == "127.0.0.1"


def test_rills_own_json_errors_pass_nginx_untouched(front) -> None:
    """nginx's @unavailable page is for errors nginx makes, not for Rill's 502 answers."""
    nginx, _ = front
    model, _ = sim_model(fault="status", status=500)
    with nginx.post(ask(model)) as response:
        assert response.status_code == 502
        assert response.headers["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "upstream_error"


def test_plain_http_is_redirected_to_https_keeping_the_method(front) -> None:
    nginx, _ = front
    response = requests.post(f"{nginx.http_url}/api/chat", json={}, allow_redirects=False,
                             timeout=10)
    assert response.status_code == 308
    assert response.headers["Location"].startswith("https://")


def test_static_files_are_gzipped_and_the_page_is_not(front) -> None:
    nginx, _ = front
    gzip = {"Accept-Encoding": "gzip"}
    page = requests.get(nginx.url, headers=gzip, verify=nginx.ca, timeout=10)
    assert page.status_code == 200
    assert "Content-Encoding" not in page.headers, "the page carries a CSRF token (BREACH)"
    css = requests.get(f"{nginx.url}/rill-static/chat.css", headers=gzip, verify=nginx.ca,
                       timeout=10)
    assert css.status_code == 200
    assert css.headers["Content-Encoding"] == "gzip"


@pytest.mark.timeout(90)
def test_heartbeats_keep_a_silent_stream_open_through_nginx(front) -> None:
    nginx, _ = front
    model, _ = sim_model(tokens=3, ttft_ms=35_000)
    started = time.monotonic()
    # A read timeout well under the silence: it passes only if `: ping` comments (every
    # RILL_HEARTBEAT_SECONDS=10 s) reach the client as they are written. (The silence was
    # 90 s; 35 s shows the same with three pings, and leaves a minute of CI for other work.)
    with nginx.post(ask(model), timeout=(5, 15)) as response:
        assert_event_stream_headers(response)
        items = list(parse(response.iter_content(chunk_size=None)))
    elapsed = time.monotonic() - started
    assert elapsed >= 34, elapsed
    first_delta = next(i for i, item in enumerate(items)
                       if isinstance(item, Event) and item.event == "delta")
    # One per 10 s of silence: 3 in 35 s; 2 leaves room for a loaded machine.
    assert items[:first_delta].count("ping") >= 2
    events = events_only(items)
    assert text_of(events) == expected_text(3)
    assert (events[-1].event, events[-1].json["finish_reason"]) == ("done", "stop")


def assert_json_unavailable(response: requests.Response) -> None:
    """A 503 shaped as Rill's (from a draining Rill or nginx's fallback), never HTML."""
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "unavailable"
    assert error["message"]


def test_sigterm_drains_through_nginx_and_later_posts_get_a_json_503(simulator) -> None:
    env = relay_env(simulator, RILL_PROXY_HOPS="1", RILL_GRACEFUL_TIMEOUT="4")
    model, _ = sim_model(tokens=1000, itl_ms=50)  # 50 s: outlasts the 4 s drain
    with run_rill(env, "nginx-drain") as rill, run_nginx(rill) as nginx, \
            nginx.post(ask(model)) as response:
        assert_event_stream_headers(response)
        items = parse(response.iter_content(chunk_size=None))
        next(i for i in items if isinstance(i, Event) and i.event == "delta")
        rill.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with nginx.post(ask(model)) as during:
            assert_json_unavailable(during)
        events = events_only(items)
        final = events[-1]
        assert (final.event, final.json["code"]) == ("error", "shutdown")
        assert final.json["retry_after"] == 1
        rill.process.wait(timeout=15)
        # Rill is gone: nginx's own fallback answers, shaped as Rill would.
        with nginx.post(ask(model)) as after:
            assert_json_unavailable(after)
            assert after.headers["Cache-Control"] == "no-store"
