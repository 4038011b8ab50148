"""Rill as a guest in a host Flask app: its rules on its routes only (in process; the
real-process and installed-wheel checks are tests/integration/test_host_app.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask, render_template_string, request
from flask_login import LoginManager, UserMixin, current_user, login_user
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from rill import Rill

CHAT = {"messages": [{"role": "user", "content": "hi"}]}
RILL = {"RILL_UPSTREAM": "demo", "RILL_DEMO_TTFT_MS": 0, "RILL_DEMO_TOKENS_PER_SECOND": 10_000,
        "RILL_RATELIMIT_ENABLED": False}


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def host_app(templates: Path | None = None, **config: Any) -> Flask:
    """A host the way legacy apps are: Flask-Login, CSRFProtect, its own pages."""
    app = Flask("host", template_folder=str(templates) if templates else None)
    app.config.update(SECRET_KEY="host-secret", **config)
    manager = LoginManager(app)
    manager.login_view = "login"
    manager.user_loader(User)
    CSRFProtect(app)

    @app.get("/")
    def home() -> str:
        return render_template_string("<script>var inline = 1;</script>home of {{ who }}",
                                      who=current_user.get_id())

    @app.route("/login", methods=["GET", "POST"])
    def login() -> str:
        if request.method == "POST":
            login_user(User(request.form["name"]))
        return "login"

    @app.get("/peer")
    def peer() -> str:
        return f"{request.remote_addr} {request.scheme}"

    return app


def embed(app: Flask, **config: Any) -> Flask:
    app.config.update({**RILL, **config})
    Rill(app, url_prefix="/assistant", user_loader=lambda: current_user.get_id())
    return app


def snapshot(app: Flask) -> list[tuple[Any, ...]]:
    client = app.test_client()
    seen = []
    for path, kwargs in [("/", {}), ("/login", {}), ("/peer", {}), ("/missing", {}),
                         ("/", {"headers": {"Host": "host.example"}}),
                         ("/", {"headers": {"X-Forwarded-Proto": "https",
                                            "X-Forwarded-For": "203.0.113.9"}})]:
        response = client.get(path, **kwargs)
        headers = sorted((k, v) for k, v in response.headers.items() if k != "Date")
        seen.append((path, response.status_code, headers, response.get_data()))
    posted = client.post("/login", data={"name": "alice"})  # no CSRF token: the host's 400
    seen.append(("POST /login", posted.status_code, posted.get_data()))
    return seen


def test_the_hosts_routes_settings_and_hooks_are_left_as_they_were() -> None:
    before_app = host_app()
    before, config = snapshot(before_app), dict(before_app.config)
    app = embed(host_app())
    assert snapshot(app) == before, "same status, headers and body on every host route"
    assert {k: v for k, v in app.config.items() if not k.startswith("RILL_")} == config
    assert "csp_nonce" not in app.jinja_env.globals, "no Talisman on the host's templates"
    assert type(app.session_interface) is type(before_app.session_interface)
    assert app.wsgi_app.__class__ is before_app.wsgi_app.__class__, "no middleware"


def test_rills_own_routes_get_rills_rules() -> None:
    app = embed(host_app())
    page = app.test_client().get("/assistant/", headers={"Host": "host.example"})
    assert page.status_code == 302, "anonymous: to the host's login"
    client = app.test_client()
    client.post("/login", data={"name": "alice"})  # the host's CSRF check is on in config
    app.config["WTF_CSRF_ENABLED"] = False
    client.post("/login", data={"name": "alice"})
    app.config["WTF_CSRF_ENABLED"] = True
    page = client.get("/assistant/")
    assert page.status_code == 200
    assert "'nonce-" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "X-Request-ID" in page.headers
    assert "X-Request-ID" not in client.get("/").headers


@pytest.mark.parametrize(("login_url", "expected"), [
    ("", "/login?next=/assistant/"),  # Flask-Login's login_view
    ("login", "/login?next=/assistant/"),  # an endpoint name
    ("https://sso.example/auth?app=notes", "https://sso.example/auth?app=notes&next=/assistant/"),
])
def test_anonymous_visitors_are_sent_to_the_login_with_next(login_url, expected) -> None:
    from urllib.parse import unquote

    app = embed(host_app(), RILL_LOGIN_URL=login_url)
    response = app.test_client().get("/assistant/")
    assert response.status_code == 302
    assert unquote(response.headers["Location"]) == expected


def test_without_a_login_page_anonymous_visitors_get_401() -> None:
    app = Flask("bare")
    app.config.update(SECRET_KEY="k", **RILL)
    Rill(app, user_loader=lambda: None)
    assert app.test_client().get("/").status_code == 401


@pytest.mark.parametrize(("host_proxy_fix", "hops", "rill_sees"), [
    (True, 0, "127.0.0.1"),  # the host believes its proxy; Rill, told of none, does not
    (False, 1, "203.0.113.9"),  # Rill believes one hop; the host's own view is unchanged
    (True, 1, "203.0.113.9"),
])
def test_forwarded_headers_count_for_rill_as_rill_proxy_hops_says(host_proxy_fix, hops,
                                                                   rill_sees) -> None:
    app = host_app()
    if host_proxy_fix:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
    embed(app, RILL_PROXY_HOPS=hops)
    client = app.test_client()
    forwarded = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    host_sees = client.get("/peer", headers=forwarded).get_data(as_text=True)
    assert host_sees == ("203.0.113.9 https" if host_proxy_fix else "127.0.0.1 http")
    # /metrics answers loopback peers only: it shows whom Rill believes it talks to.
    metrics = client.get("/assistant/metrics", headers=forwarded)
    assert metrics.status_code == (200 if rill_sees == "127.0.0.1" else 404)


def test_a_hosts_layout_can_wrap_the_page(tmp_path) -> None:
    (tmp_path / "rill").mkdir()
    (tmp_path / "base.html").write_text(
        '<html><head><link rel="stylesheet" href="https://cdn.example/site.css">'
        "{% block head %}{% endblock %}</head><body><nav>Host nav</nav>"
        "{% block body %}{% endblock %}</body></html>")
    (tmp_path / "rill" / "base.html").write_text(
        '{% extends "base.html" %}'
        "{% block head %}{% block rill_head %}{% endblock %}{% endblock %}"
        "{% block body %}{% block rill_content %}{% endblock %}"
        "{% block rill_scripts %}{% endblock %}{% endblock %}")
    app = embed(host_app(tmp_path), RILL_CSP_SOURCES=["https://cdn.example"])
    client = app.test_client()
    app.config["WTF_CSRF_ENABLED"] = False
    client.post("/login", data={"name": "alice"})
    page = client.get("/assistant/")
    html = page.get_data(as_text=True)
    assert "<nav>Host nav</nav>" in html and 'id="chat"' in html and "chat.js" in html
    policy = page.headers["Content-Security-Policy"]
    assert "style-src 'self' https://cdn.example" in policy
    assert 'data-user-key="' in html and 'data-user-key=""' not in html


def test_the_api_is_left_to_rill_by_the_hosts_csrf_protection() -> None:
    """A JWT client has no CSRF token: the host's CSRFProtect must not refuse it, and Rill
    exempts it by auth mode, not by its header."""
    app = host_app()
    app.config.update({**RILL, "RILL_AUTH": "jwt", "RILL_JWT_SECRET": "s" * 32})
    Rill(app, url_prefix="/assistant")
    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, "s" * 32)
    client = app.test_client()
    response = client.post("/assistant/api/chat", json=CHAT,
                           headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    response.get_data()
    assert client.post("/login", data={"name": "x"}).status_code == 400, "host's CSRF stands"


def test_cookie_requests_need_the_token_even_with_a_bearer_header() -> None:
    app = embed(host_app())
    client = app.test_client()
    app.config["WTF_CSRF_ENABLED"] = False
    client.post("/login", data={"name": "alice"})
    app.config["WTF_CSRF_ENABLED"] = True
    refused = client.post("/assistant/api/chat", json=CHAT,
                          headers={"Authorization": "Bearer junk"})
    assert (refused.status_code, refused.json["error"]["code"]) == (403, "csrf_failed")


def test_the_page_is_told_the_stream_cap_it_keeps_to() -> None:
    """RILL_MAX_STREAMS_PER_CLIENT reaches the page as data-max-streams; a user's own
    max_streams (RILL_USER_LIMITS) wins for that user."""
    app = embed(host_app(), RILL_MAX_STREAMS_PER_CLIENT=3,
                RILL_USER_LIMITS={"bob": {"max_streams": 7}})
    app.config["WTF_CSRF_ENABLED"] = False
    for name, cap in (("alice", "3"), ("bob", "7")):
        client = app.test_client()
        client.post("/login", data={"name": name})
        assert f'data-max-streams="{cap}"' in client.get("/assistant/").get_data(as_text=True)
