"""A legacy Flask app adopts Rill, installed from the built wheel, in at most three lines.

The host (``tests/hosts/legacy``, "Jotter") has its own ``app`` and ``blueprints`` packages, a
blueprint named ``api``, its own ``base.html``, Flask-Login, Flask-WTF forms, inline scripts,
a CDN stylesheet, no Talisman, and an rq-style worker. Everything here runs in an interpreter
that has the wheel installed (not editable) over the main venv's dependencies.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from gunicorn import version_info as gunicorn_version

from rill.simulator import SimulatorProcess, expected_text
from tests.integration.conftest import (
    RillServer,
    ask,
    free_port,
    relay_env,
    serving,
    sim_model,
    start_server,
    stop_server,
)
from tests.sse_client import events_only, parse, text_of
from tests.wheels import build_wheel

pytestmark = pytest.mark.integration

HOST = Path(__file__).parents[1] / "hosts" / "legacy"
RILL_LINES = re.compile(r"^# --- Rill ---\n(.*?)^# --- end Rill ---\n", re.M | re.S)
HIDDEN_TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')
META_TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
ANY_TOKEN = re.compile(rb'(name="csrf[-_]token"[^>]*? (?:value|content)=")[^"]+"')

Argv = Callable[[int], list[str]]


def gunicorn(*args: str) -> Argv:
    """``gunicorn ARGS app:app`` on a loopback port, as the host would run it.

    gunicorn 27's control socket is one per user ($HOME/.gunicorn): off, so runs can overlap
    (older gunicorn has none, nor the flag).
    """
    return lambda port: ["gunicorn", *args, "--bind", f"127.0.0.1:{port}", *NO_CONTROL_SOCKET,
                         "app:app"]


NO_CONTROL_SOCKET = ("--no-control-socket",) if gunicorn_version >= (27,) else ()


SERVERS: dict[str, Argv] = {
    "flask-run": lambda port: ["flask", "--app", "app", "run", "--port", str(port)],
    "gevent": gunicorn("-k", "gevent"),
    "gthread": gunicorn("-k", "gthread", "--threads", "8"),
}


# --- the wheel, and an interpreter that has it installed ---------------------------------

@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv's python with the wheel installed, reusing the main venv's dependencies."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    interpreter = venv / "bin" / "python"
    site = Path(run_python(interpreter, "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                           cwd=venv))
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)  # a pure wheel is what installing puts in site-packages
    # A plain path line adds the folder but runs none of the .pth files in it, so the main
    # venv's editable finder, which would serve this checkout's rill, never loads.
    (site / "main-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    found = run_python(interpreter, "import rill; print(rill.__file__)", cwd=venv)
    assert Path(found).is_relative_to(site), f"rill came from {found}, not the wheel"
    return interpreter


def run_python(interpreter: Path, code: str, cwd: Path) -> str:
    out = subprocess.run([str(interpreter), "-c", code], cwd=cwd, env=clean_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without settings that would steer Python, Flask, gunicorn or Rill."""
    steering = ("OPENAI_", "RILL_", "FLASK_", "PYTHON", "COVERAGE_", "GUNICORN_",
                "WEB_CONCURRENCY", "PROMETHEUS_")
    base = {k: v for k, v in os.environ.items() if not k.startswith(steering)}
    return {**base, "PYTHONUNBUFFERED": "1", **extra}


def host_env(simulator: SimulatorProcess) -> dict[str, str]:
    return clean_env(RILL_RATELIMIT_ENABLED="false", **relay_env(simulator))


# --- the host, before and after ----------------------------------------------------------

def copy_host(dest: Path, *, with_rill: bool) -> Path:
    """Copy the host to ``dest``; without Rill, the marked lines are left out."""
    shutil.copytree(HOST, dest, ignore=shutil.ignore_patterns("__pycache__", "instance"))
    if not with_rill:
        init = dest / "app" / "__init__.py"
        before = RILL_LINES.sub("", init.read_text())
        assert "rill" not in before.lower()
        init.write_text(before)
    return dest


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The host as written, Rill added."""
    return copy_host(tmp_path_factory.mktemp("after") / "jotter", with_rill=True)


def start(python: Path, cwd: Path, argv: Argv, env: dict[str, str], name: str) -> RillServer:
    port = free_port()
    return start_server([str(python), "-m", *argv(port)], port, env=env, name=f"host-{name}",
                        cwd=cwd)


@contextmanager
def serve(python: Path, cwd: Path, argv: Argv, env: dict[str, str],
          name: str) -> Iterator[RillServer]:
    """Run the host in ``cwd`` until its own ``/api/status`` answers; stop it after."""
    with serving(start(python, cwd, argv, env, name), "/api/status") as server:
        yield server


# --- tests -------------------------------------------------------------------------------

def test_rill_is_added_in_at_most_three_lines_at_the_end() -> None:
    source = (HOST / "app" / "__init__.py").read_text()
    [added] = RILL_LINES.findall(source)
    assert 0 < len([line for line in added.splitlines() if line.strip()]) <= 3
    assert source.endswith("# --- end Rill ---\n")


def test_the_hosts_routes_answer_exactly_as_before(python: Path, simulator: SimulatorProcess,
                                                  tmp_path: Path) -> None:
    """Every host route: the same status, headers (less Date and cookie values) and body
    (less CSRF tokens) with Rill as without. Both runs serve one folder, since a static
    file's ETag hashes its path."""
    folder = tmp_path / "jotter"
    runs = {}
    for with_rill in (False, True):
        shutil.rmtree(folder, ignore_errors=True)
        copy_host(folder, with_rill=with_rill)
        name = "after" if with_rill else "before"
        with serve(python, folder, SERVERS["gevent"], host_env(simulator), name) as server:
            runs[name] = visit(server.url)
    assert runs["after"].keys() == runs["before"].keys()
    for label, (status, headers, body) in runs["before"].items():
        assert runs["after"][label][0] == status, f"status of {label!r}"
        assert runs["after"][label][1] == headers, f"headers of {label!r}"
        assert runs["after"][label][2] == body, f"body of {label!r}"


def test_the_hosts_worker_still_imports_the_hosts_app(python: Path, host: Path) -> None:
    """An rq-style worker appends "." to ``sys.path``, after site-packages: a top-level
    ``app`` in the wheel was found first. ``-P`` starts it as a console script would, with
    no script folder put first on ``sys.path``."""
    out = subprocess.run([str(python), "-P", "worker.py"], cwd=host, env=clean_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert Path(out.stdout.strip()).resolve() == (host / "app" / "__init__.py").resolve()


@pytest.mark.parametrize("server", SERVERS)
def test_signed_in_users_stream_and_no_one_else_reads_their_stream(
        python: Path, host: Path, simulator: SimulatorProcess, server: str) -> None:
    with serve(python, host, SERVERS[server], host_env(simulator), f"stream-{server}") as jotter:
        anonymous = requests.get(f"{jotter.url}/assistant/", allow_redirects=False, timeout=10)
        assert anonymous.status_code == 302, "visitors go to the host's own login"
        login = urlsplit(anonymous.headers["Location"])
        assert login.path == "/login"
        assert parse_qs(login.query)["next"] == ["/assistant/"]

        alice, bob = sign_in(jotter.url, "alice"), sign_in(jotter.url, "bob")
        chat = f"{jotter.url}/assistant/api/chat"
        model, _ = sim_model(tokens=5)
        with alice, bob, alice.post(chat, json=ask(model), stream=True, timeout=30) as response:
            assert response.status_code == 200, response.content[:500]
            events = events_only(parse(response.iter_content(chunk_size=None)))
            assert events[-1].event == "done"
            assert text_of(events) == expected_text(5)
            stream = f"{chat}/{events[0].json['stream_id']}/events"
            refused = bob.get(stream, timeout=10)
            assert refused.status_code == 404
            assert refused.json()["error"]["code"] == "stream_not_found"
            assert alice.get(stream, timeout=10).status_code == 200


REFUSALS = {
    "sync": ((), ("gevent", "gthread")),
    "two-workers-memory-hub": (("-k", "gevent", "-w", "2"), ("RILL_REDIS_URL",)),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_workers_rill_cannot_serve_refuse_to_start(python: Path, host: Path, case: str) -> None:
    """A sync worker serves one request at a time, so one stream would hold it (until its
    timeout kills it mid-answer); two workers with the memory hub each see only their own
    streams. Either must stop gunicorn with a message that says what to do instead."""
    args, words = REFUSALS[case]
    server = start(python, host, gunicorn(*args), clean_env(), f"refuse-{case}")
    try:
        # gunicorn before 24 can miss the second worker's exit when both fail at once and
        # then waits out its graceful_timeout (30 s) before it exits
        code = server.process.wait(timeout=50)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        stop_server(server.process)
    log = server.log()
    assert code not in (None, 0), f"gunicorn is still serving (or exited 0):\n{log}"
    assert any(all(word in line for word in words) for line in log.splitlines()), log


# --- a visitor, alice and bob ------------------------------------------------------------

Snapshot = tuple[int, list[tuple[str, str]], bytes]


def visit(url: str) -> dict[str, Snapshot]:
    """Walk every host route, signed out and signed in, always in the same order."""
    seen: dict[str, Snapshot] = {}

    def see(label: str, session: requests.Session, method: str, path: str,
            **kwargs: object) -> requests.Response:
        response = session.request(method, f"{url}{path}", allow_redirects=False,
                                   timeout=10, **kwargs)
        seen[label] = snapshot(response)
        return response

    with requests.Session() as alice, requests.Session() as bob:
        see("home", alice, "GET", "/")
        see("notes, signed out", alice, "GET", "/notes")
        see("api notes, signed out", alice, "GET", "/api/notes")
        see("api status", alice, "GET", "/api/status")
        stylesheet = see("stylesheet", alice, "GET", "/static/css/jotter.css")
        see("stylesheet, unchanged", alice, "GET", "/static/css/jotter.css",
            headers={"If-None-Match": stylesheet.headers["ETag"]})
        see("not found", alice, "GET", "/no-such-page")
        see("api not found", alice, "GET", "/api/no-such-route")
        see("method not allowed", alice, "DELETE", "/notes")

        form = see("login form", alice, "GET", "/login?next=%2Fnotes")
        token = csrf(form)
        see("login without token", alice, "POST", "/login?next=%2Fnotes",
            data={"username": "alice", "password": "secret"})
        see("login, unknown user", alice, "POST", "/login?next=%2Fnotes",
            data={"csrf_token": token, "username": "mallory", "password": "secret"})
        see("login", alice, "POST", "/login?next=%2Fnotes",
            data={"csrf_token": token, "username": "alice", "password": "secret"})
        notes = see("notes", alice, "GET", "/notes")
        see("add note", alice, "POST", "/notes",
            data={"csrf_token": csrf(notes), "body": "Buy milk", "submit": "Save"})
        notes = see("notes, one added", alice, "GET", "/notes")
        api_token = csrf(notes, META_TOKEN)
        see("api add note", alice, "POST", "/api/notes", json={"body": "Call Bob"},
            headers={"X-CSRFToken": api_token})
        see("api add note without token", alice, "POST", "/api/notes", json={"body": "x"})
        see("api add empty note", alice, "POST", "/api/notes", json={},
            headers={"X-CSRFToken": api_token})
        see("api notes", alice, "GET", "/api/notes")
        see("home, signed in", alice, "GET", "/")
        see("logout", alice, "GET", "/logout")
        see("home, signed out again", alice, "GET", "/")

        offsite = "/login?next=https%3A%2F%2Fevil.example%2F"
        form = see("login form, offsite next", bob, "GET", offsite)
        see("login, offsite next goes home", bob, "POST", offsite,
            data={"csrf_token": csrf(form), "username": "bob", "password": "secret"})
        see("api notes, bob's", bob, "GET", "/api/notes")
    return seen


def snapshot(response: requests.Response) -> Snapshot:
    """Status, headers and body, less what differs from run to run anyway: Date, cookies'
    values (their attributes stay), CSRF tokens, and the order of ``Allow`` (from a set)."""
    headers = sorted((name.lower(), normal(name.lower(), value))
                     for name, value in response.raw.headers.items() if name.lower() != "date")
    return response.status_code, headers, ANY_TOKEN.sub(rb'\1<csrf>"', response.content)


def normal(name: str, value: str) -> str:
    if name == "set-cookie":
        cookie, _, rest = value.partition("=")
        _, sep, attributes = rest.partition(";")
        return f"{cookie}=<value>{sep}{attributes}"
    if name == "allow":
        return ", ".join(sorted(value.split(", ")))
    return value


def sign_in(url: str, name: str) -> requests.Session:
    """Open Rill's page, sign in on the host's form it sends us to, and keep the page's CSRF
    token for Rill's POSTs, as the page's script does."""
    session = requests.Session()
    form = session.get(f"{url}/assistant/", timeout=10)
    assert urlsplit(form.url).path == "/login", form.url
    page = session.post(form.url, timeout=10,
                        data={"csrf_token": csrf(form), "username": name, "password": "secret"})
    assert page.status_code == 200 and page.url == f"{url}/assistant/", page.url
    session.headers["X-CSRFToken"] = csrf(page, META_TOKEN)
    return session


def csrf(page: requests.Response, where: re.Pattern[str] = HIDDEN_TOKEN) -> str:
    """The CSRF token in ``page``'s form (or, with ``META_TOKEN``, in its ``<meta>``)."""
    found = where.search(page.text)
    assert found, f"no CSRF token in {page.url}"
    return found.group(1)
