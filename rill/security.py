"""HTTPS, a strict CSP and the other security headers, through flask-talisman.

Talisman sets the headers; two things it does not do safely here are done in this module:
it believes ``X-Forwarded-Proto`` from anyone, so the raw header is dropped and only
werkzeug's ``ProxyFix`` (with ``RILL_PROXY_HOPS`` trusted hops) may turn a request into
https; and it cannot let plain HTTP through for loopback, so the https redirect is ours.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Flask, redirect, request
from flask.sessions import SecureCookieSessionInterface
from flask_talisman import Talisman
from itsdangerous import URLSafeTimedSerializer
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.wrappers import Response

from .errors import CrossSiteRequest

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
EXEMPT_ENDPOINTS = frozenset({"health.healthz", "health.readyz"})

CSP = {
    "default-src": "'self'",
    "script-src": "",  # scripts only by nonce (talisman appends it)
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "font-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


def init_app(app: Flask) -> Talisman:
    """Trust forwarded headers only through ProxyFix, then apply talisman and the redirect."""
    app.wsgi_app = _DropForwardedProto(app.wsgi_app)  # type: ignore[method-assign]
    hops = app.config["RILL_PROXY_HOPS"]
    if hops > 0:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)
    talisman = Talisman(
        app,
        force_https=False,
        strict_transport_security=True,
        strict_transport_security_max_age=31_536_000,
        content_security_policy=CSP,
        content_security_policy_nonce_in=["script-src"],
        frame_options="DENY",
        referrer_policy="strict-origin-when-cross-origin",
        session_cookie_secure=True,
    )
    if app.config["RILL_FORCE_HTTPS"]:
        app.before_request(_redirect_to_https)
    return talisman


class SigningSessionInterface(SecureCookieSessionInterface):
    """Flask's cookie sessions, with the signing serializer built once per key set.

    Flask builds an itsdangerous serializer on every request, and each one serializes an
    empty dict to probe its own type: about 40 µs a request. Same keys, same serializer;
    a changed ``SECRET_KEY`` or ``SECRET_KEY_FALLBACKS`` builds a new one.
    """

    _cached: tuple[tuple[Any, ...], URLSafeTimedSerializer | None] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, *(app.config["SECRET_KEY_FALLBACKS"] or ()))
        cached = self._cached
        if cached is None or cached[0] != keys:
            cached = self._cached = (keys, super().get_signing_serializer(app))
        return cached[1]


def init_sessions(app: Flask) -> None:
    """Use :class:`SigningSessionInterface` unless the app chose its own sessions."""
    if type(app.session_interface) is SecureCookieSessionInterface:
        app.session_interface = SigningSessionInterface()


def init_cors(app: Flask) -> None:
    """Open the API to the origins in ``RILL_CORS_ORIGINS`` (flask-cors); closed if empty."""
    origins = app.config["RILL_CORS_ORIGINS"]
    if origins:
        from flask_cors import CORS

        CORS(app, resources={r"/api/*": {"origins": origins}},
             allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
             expose_headers=["Retry-After"], max_age=600)


def init_csrf(app: Flask) -> None:
    """CSRF tokens (Flask-WTF) for cookie-authenticated API POSTs, checked by
    :func:`check_csrf_token` only on Rill's own views: a host's forms are left alone.

    The token is signed with ``SECRET_KEY``: the host's, else ``RILL_SECRET_KEY``, else one
    made for this process (fine for the one worker of the memory hub; with Redis, workers
    share one kept there).
    """
    from flask_wtf.csrf import CSRFProtect

    app.config.setdefault("WTF_CSRF_CHECK_DEFAULT", False)
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # a page may stay open for days
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = app.config["RILL_SECRET_KEY"] or _shared_secret(app)
    if "csrf" not in app.extensions:
        CSRFProtect(app)


def _shared_secret(app: Flask) -> str:
    key = secrets.token_hex(32)
    url = app.config["RILL_REDIS_URL"]
    if not url:
        return key
    import redis

    from .hub.redis_io import ERRORS, connect, disconnect

    try:
        client = connect(url, pool_size=1, socket_timeout=2.0)
        client.set("rill:secret_key", key, nx=True)
        shared = str(client.get("rill:secret_key").decode())
        disconnect(client)
        return shared
    except (redis.RedisError, *ERRORS):
        return key  # tokens then hold per worker until Redis is back and workers restart


def check_csrf_token() -> None:
    """Require the CSRF token on a POST that rides on cookies (not on a Bearer token).

    Raises :class:`~rill.errors.CrossSiteRequest` (403) when it is missing or wrong.
    """
    from flask import current_app
    from flask_wtf.csrf import CSRFError

    bearer = request.headers.get("Authorization", "").lower().startswith("bearer ")
    if bearer or not request.cookies:
        return
    try:
        current_app.extensions["csrf"].protect()
    except CSRFError:
        raise CrossSiteRequest("This request lacks the page's CSRF token; reload the page "
                               "and try again.", code="csrf_failed") from None


def refuse_cross_site(allowed_origins: list[str]) -> None:
    """Refuse a state-changing request sent by another site's page (CSRF).

    Follows the Fetch Metadata approach (W3C "Fetch Metadata Request Headers"; OWASP's CSRF
    cheat sheet): a browser says ``Sec-Fetch-Site: cross-site`` (or an ``Origin`` that is not
    ours) for another site's form or fetch. Requests with ``Authorization: Bearer`` carry no
    ambient credentials and are exempt; so are non-browser clients, which send neither
    header. Raises :class:`~rill.errors.CrossSiteRequest` (403).
    """
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        return
    origin = request.headers.get("Origin")
    if origin and (origin == request.host_url.rstrip("/") or origin in allowed_origins):
        return
    site = request.headers.get("Sec-Fetch-Site")
    if site in ("cross-site", "same-site") or (origin and site != "same-origin"):
        raise CrossSiteRequest()


def _redirect_to_https() -> Response | None:
    if request.is_secure or request.endpoint in EXEMPT_ENDPOINTS:
        return None
    if request.host.rsplit(":", 1)[0] in LOOPBACK_HOSTS or request.host in LOOPBACK_HOSTS:
        return None
    # 308 keeps the method and body; the client should use https from the start.
    return redirect(request.url.replace("http://", "https://", 1), code=308)


class _DropForwardedProto:
    """Remove ``X-Forwarded-Proto`` after ProxyFix has read what it trusts of it."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ.pop("HTTP_X_FORWARDED_PROTO", None)
        return self.wsgi_app(environ, start_response)
