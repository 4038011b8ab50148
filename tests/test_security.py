"""HTTPS, CSP and the other security headers (flask-talisman, plus Rill's redirect)."""

from __future__ import annotations

import re

import pytest
from flask import Flask


def csp_of(response) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    return {part.split()[0]: " ".join(part.split()[1:]) for part in policy.split(";")}


def test_page_has_a_strict_csp_and_nonced_scripts(client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    csp = csp_of(response)
    nonce = re.fullmatch(r"'nonce-([A-Za-z0-9_\-+/=]{16,})'", csp["script-src"]).group(1)
    assert csp["default-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["object-src"] == "'none'"
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert "unsafe-eval" not in response.headers["Content-Security-Policy"]
    html = response.get_data(as_text=True)
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts, "the page loads its script"
    assert all(f'nonce="{nonce}"' in tag for tag in scripts)
    assert not re.search(r"\son[a-z]+=", html), "no inline event handlers"
    assert "style=" not in html, "no inline styles"
    assert client.get("/").headers["Content-Security-Policy"] != response.headers[
        "Content-Security-Policy"], "a fresh nonce per response"


def test_security_headers_are_set(client) -> None:
    headers = client.get("/").headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("host", ["rill.example", "rill.example:8000", "10.1.2.3:8000"])
def test_plain_http_to_a_public_host_is_redirected_to_https(client, host) -> None:
    response = client.get("/?q=1", headers={"Host": host})
    assert response.status_code == 308
    assert response.headers["Location"] == f"https://{host}/?q=1"
    assert client.post("/api/chat", json={}, headers={"Host": host}).status_code == 308


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "localhost:8000", "[::1]:8000"])
def test_plain_http_to_loopback_keeps_working(client, host) -> None:
    response = client.get("/", headers={"Host": host})
    assert response.status_code == 200
    assert "Strict-Transport-Security" not in response.headers


def test_health_checks_answer_over_plain_http_on_any_host(client) -> None:
    assert client.get("/healthz", headers={"Host": "10.0.0.7:8000"}).json == {"status": "ok"}
    assert client.get("/readyz", headers={"Host": "10.0.0.7:8000"}).status_code == 200


def test_https_responses_carry_hsts(client) -> None:
    response = client.get("/", base_url="https://rill.example")
    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_spoofed_forwarded_proto_is_ignored_without_trusted_proxies(client) -> None:
    """flask-talisman alone trusts X-Forwarded-Proto from anyone; Rill must not."""
    response = client.get("/", headers={"Host": "rill.example", "X-Forwarded-Proto": "https"})
    assert response.status_code == 308
    assert "Strict-Transport-Security" not in response.headers


@pytest.mark.parametrize("config", [{"RILL_PROXY_HOPS": 1}])
def test_forwarded_proto_from_a_trusted_proxy_counts(client) -> None:
    headers = {"Host": "rill.example", "X-Forwarded-Proto": "https",
               "X-Forwarded-For": "203.0.113.9"}
    response = client.get("/", headers=headers)
    assert response.status_code == 200
    assert "Strict-Transport-Security" in response.headers


@pytest.mark.parametrize("config", [{"RILL_FORCE_HTTPS": False}])
def test_redirect_can_be_turned_off(client) -> None:
    assert client.get("/", headers={"Host": "rill.example"}).status_code == 200


CHAT = {"messages": [{"role": "user", "content": "Hi"}]}


def test_cross_site_form_post_is_refused(client) -> None:
    response = client.post("/api/chat", data="messages=hi",
                           content_type="application/x-www-form-urlencoded",
                           headers={"Origin": "https://evil.example",
                                    "Sec-Fetch-Site": "cross-site"})
    assert (response.status_code, response.json["error"]["code"]) == (403,
                                                                      "cross_site_request")


@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"},
                                     {"Sec-Fetch-Site": "cross-site"},
                                     {"Origin": "null", "Sec-Fetch-Site": "cross-site"}])
def test_cross_site_fetch_is_refused(client, headers) -> None:
    response = client.post("/api/chat", json=CHAT, headers=headers)
    assert response.status_code == 403


@pytest.mark.parametrize("headers", [
    {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"},  # the page's own POST
    {},  # curl and other non-browser clients
])
def test_same_origin_and_non_browser_posts_pass(client, headers) -> None:
    response = client.post("/api/chat", json=CHAT, headers=headers)
    assert response.status_code == 200
    response.get_data()


def test_cors_is_closed_by_default(client) -> None:
    response = client.options("/api/chat", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize("config", [{"RILL_CORS_ORIGINS": ["https://app.example"]}])
def test_cors_allow_list_admits_its_origins(client) -> None:
    preflight = client.options("/api/chat", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    response = client.post("/api/chat", json=CHAT, headers={
        "Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    response.get_data()
    other = client.options("/api/chat", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_cookie_authenticated_post_needs_the_pages_csrf_token(client) -> None:
    import re as regex

    page = client.get("/").get_data(as_text=True)
    token = regex.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
    client.set_cookie("host_session", "signed-in", domain="localhost")
    refused = client.post("/api/chat", json=CHAT)
    assert (refused.status_code, refused.json["error"]["code"]) == (403, "csrf_failed")
    wrong = client.post("/api/chat", json=CHAT, headers={"X-CSRFToken": "forged"})
    assert wrong.status_code == 403
    accepted = client.post("/api/chat", json=CHAT, headers={"X-CSRFToken": token})
    assert accepted.status_code == 200
    accepted.get_data()
    bearer = client.post("/api/chat", json=CHAT, headers={"Authorization": "Bearer junk"})
    assert bearer.status_code == 403, "a header does not skip the check; only JWT mode does"


def test_a_bearer_header_is_not_a_pass_from_another_site(client) -> None:
    response = client.post("/api/chat", json=CHAT, headers={
        "Origin": "https://evil.example", "Authorization": "Bearer junk"})
    assert response.status_code == 403


@pytest.mark.parametrize("config", [{"RILL_AUTH": "jwt", "RILL_JWT_SECRET": "s" * 32}])
def test_in_jwt_mode_the_token_is_the_credential_not_cookies(client) -> None:
    import time

    import jwt

    token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, "s" * 32)
    client.set_cookie("host_session", "signed-in", domain="localhost")
    response = client.post("/api/chat", json=CHAT, headers={
        "Origin": "https://evil.example", "Authorization": f"Bearer {token}"})
    assert response.status_code == 200, "no CSRF token or origin check: a page cannot forge it"
    response.get_data()
    junk = client.post("/api/chat", json=CHAT, headers={"Authorization": "Bearer junk"})
    assert junk.status_code == 401


def test_sessions_sign_with_one_serializer_per_key_set(app) -> None:
    """Flask built a serializer per request; Rill's interface reuses it until a key
    changes, and a cookie signed before a rotation still opens with the fallback."""
    interface = app.session_interface
    first = interface.get_signing_serializer(app)
    assert interface.get_signing_serializer(app) is first
    if "SECRET_KEY_FALLBACKS" not in Flask.default_config:
        pytest.skip("SECRET_KEY_FALLBACKS is Flask 3.1's")
    cookie = first.dumps({"a": 1})
    old_key = app.secret_key
    app.secret_key = "rotated-" + str(old_key)
    app.config["SECRET_KEY_FALLBACKS"] = [old_key]
    rotated = interface.get_signing_serializer(app)
    assert rotated is not first
    assert rotated.loads(cookie) == {"a": 1}
