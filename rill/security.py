"""HTTPS, a strict CSP and the other security headers (flask-talisman), on Rill's routes.

Everything here applies through a :class:`Scope`: the whole app when the app is Rill's own
(``app.py``), only Rill's blueprints when Rill is a guest in a host app, whose routes,
settings and responses stay as they were. Talisman sets the headers; what it does not do
safely here is done in this module: it believes ``X-Forwarded-Proto`` from anyone, so the
redirect to https is ours, and forwarded headers count only through werkzeug's ``ProxyFix``
with ``RILL_PROXY_HOPS`` trusted hops (whatever ProxyFix a host app applies to its own).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

from flask import Blueprint, Flask, redirect, request
from flask.sessions import SecureCookieSessionInterface
from flask_talisman import Talisman
from flask_wtf.csrf import validate_csrf
from itsdangerous import URLSafeTimedSerializer
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.sansio.utils import get_host
from werkzeug.wrappers import Response
from wtforms import ValidationError

from .errors import CrossSiteRequest

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
EXEMPT_ENDPOINTS = frozenset({"rill_health.healthz", "rill_health.readyz"})
CSRF_TIME_LIMIT = 30 * 86_400  # seconds: a chat page may stay open for days
_CACHED_URLS = ("host", "url", "base_url", "root_url", "host_url")
_EXTENDED = ("script-src", "style-src", "font-src", "img-src")  # by RILL_CSP_SOURCES

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


class Scope:
    """Where Rill's request hooks run: every request of ``app`` (``blueprints=None``), or
    only requests to the named blueprints, through Flask's per-blueprint hook tables.

    It is also the part of an app that :meth:`Talisman.init_app` touches; for blueprints,
    Talisman's Jinja global and session-cookie settings land here, not in the host's app.
    """

    def __init__(self, app: Flask, blueprints: Iterable[str] | None = None) -> None:
        self.app = app
        self.keys: tuple[str | None, ...] = (None,) if blueprints is None else tuple(blueprints)
        self.site_wide = blueprints is None
        self.jinja_env = app.jinja_env if self.site_wide else SimpleNamespace(globals={})
        self.config = app.config if self.site_wide else {}

    @property
    def debug(self) -> bool:
        return self.app.debug

    def before_request(self, hook: Callable[[], Any]) -> Callable[[], Any]:
        for key in self.keys:
            self.app.before_request_funcs.setdefault(key, []).append(hook)
        return hook

    def after_request(self, hook: Callable[[Any], Any]) -> Callable[[Any], Any]:
        for key in self.keys:
            self.app.after_request_funcs.setdefault(key, []).append(hook)
        return hook

    def context_processor(self, hook: Callable[[], dict[str, Any]]) -> None:
        for key in self.keys:
            self.app.template_context_processors.setdefault(key, []).append(hook)


def init_proxy_hops(scope: Scope) -> None:
    """Believe forwarded headers on requests in ``scope`` as ``RILL_PROXY_HOPS`` says."""
    hops = scope.app.config["RILL_PROXY_HOPS"]
    # ProxyFix rewrites an environ in place, then calls its app: here one that does nothing.
    fix = ProxyFix(lambda env, start: (), x_for=hops, x_proto=hops, x_host=hops,
                   x_port=hops) if hops else None
    scope.before_request(lambda: _apply_proxy_hops(fix))


def init_app(scope: Scope) -> None:
    """Apply Talisman and the redirect to https to requests in ``scope``."""
    config = scope.app.config
    extra = " ".join(config["RILL_CSP_SOURCES"])
    policy = {name: f"{value} {extra}".strip() if name in _EXTENDED else value
              for name, value in CSP.items()} if extra else CSP
    Talisman(
        scope,  # type: ignore[arg-type]
        force_https=False,
        strict_transport_security=True,
        strict_transport_security_max_age=31_536_000,
        content_security_policy=policy,
        content_security_policy_nonce_in=["script-src"],
        frame_options="DENY",
        referrer_policy="strict-origin-when-cross-origin",
        session_cookie_secure=True,
    )
    if not scope.site_wide:  # Talisman's template global is in the scope, not the app
        nonce = scope.jinja_env.globals["csp_nonce"]
        scope.context_processor(lambda: {"csp_nonce": nonce})
    force = config["RILL_FORCE_HTTPS"]
    if force or (force is None and scope.site_wide):  # a host app's TLS is the host's
        scope.before_request(_redirect_to_https)


def _apply_proxy_hops(fix: ProxyFix | None) -> None:
    """Make ``request`` (and its environ) what the client sent through ``RILL_PROXY_HOPS``
    trusted proxies (``fix``, werkzeug's ProxyFix; None for none), starting from what the
    server saw even when a host app's own ProxyFix ran first."""
    environ = request.environ
    original = environ.pop("werkzeug.proxy_fix.orig", None)
    if fix is None and original is None:
        environ.pop("HTTP_X_FORWARDED_PROTO", None)  # Talisman's HSTS believes it from anyone
        return
    if original is not None:
        environ.update({k: v for k, v in original.items() if v is not None})
    if fix is not None:
        fix(environ, lambda *args: lambda data: None)
    environ.pop("HTTP_X_FORWARDED_PROTO", None)
    request.remote_addr = environ.get("REMOTE_ADDR")
    request.scheme = environ.get("wsgi.url_scheme", "http")
    for name in _CACHED_URLS:
        request.__dict__.pop(name, None)
    request.__dict__["host"] = get_host(request.scheme, environ.get("HTTP_HOST"),
                                        request.server, request.trusted_hosts)


class SigningSessionInterface(SecureCookieSessionInterface):
    """Flask's cookie sessions, with the signing serializer built once per key set.

    Flask builds an itsdangerous serializer on every request, and each one serializes an
    empty dict to probe its own type: about 40 µs a request. Same keys, same serializer;
    a changed ``SECRET_KEY`` or ``SECRET_KEY_FALLBACKS`` builds a new one.
    """

    _cached: tuple[tuple[Any, ...], URLSafeTimedSerializer | None] | None = None

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, *(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = self._cached
        if cached is None or cached[0] != keys:
            cached = self._cached = (keys, super().get_signing_serializer(app))
        return cached[1]


def init_sessions(app: Flask) -> None:
    """Use :class:`SigningSessionInterface` unless the app chose its own sessions."""
    if type(app.session_interface) is SecureCookieSessionInterface:
        app.session_interface = SigningSessionInterface()


def init_cors(app: Flask, api_prefix: str) -> None:
    """Open the API under ``api_prefix`` to the origins in ``RILL_CORS_ORIGINS``
    (flask-cors); closed if empty. No other path of the app is touched."""
    origins = app.config["RILL_CORS_ORIGINS"]
    if origins:
        from flask_cors import CORS

        CORS(app, resources={rf"{re.escape(api_prefix)}/.*": {"origins": origins}},
             allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "X-CSRFToken"],
             expose_headers=["Retry-After"], max_age=600, intercept_exceptions=False)


def init_csrf(app: Flask, api_blueprint: Blueprint) -> None:
    """CSRF tokens (Flask-WTF's ``generate_csrf``/``validate_csrf``) for Rill's API POSTs,
    checked by :func:`check_csrf_token` on Rill's views only; a host's own ``CSRFProtect``
    is told to leave the API to Rill, and a host's forms and settings are left alone.

    The token is signed with ``SECRET_KEY``: the host's, else ``RILL_SECRET_KEY``, else one
    made for this process (fine for the one worker of the memory hub; with Redis, workers
    share one kept there).
    """
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = app.config["RILL_SECRET_KEY"] or _shared_secret(app)
    host_csrf = app.extensions.get("csrf")
    if host_csrf is not None:
        host_csrf.exempt(api_blueprint)


def _shared_secret(app: Flask) -> str:
    key = secrets.token_hex(32)
    url = app.config["RILL_REDIS_URL"]
    if not url:
        return key
    import redis

    from .hub.redis_io import ERRORS, connect, disconnect

    try:
        client = connect(url, app.config["RILL_REDIS_TIMEOUT_SECONDS"], pool_size=1)
        client.set("rill:secret_key", key, nx=True)
        shared = str(client.get("rill:secret_key").decode())
        disconnect(client)
        return shared
    except (redis.RedisError, *ERRORS):
        return key  # tokens then hold per worker until Redis is back and workers restart


def ambient_credentials(auth_mode: str) -> bool:
    """Whether this request may carry credentials a browser adds by itself (cookies, or an
    ``Authorization`` header when that is not a Bearer JWT that ``jwt`` mode verifies).

    Only such requests can be forged by another site. The exemption follows the auth mode,
    never the mere presence of a header: with a host's login any ``Authorization`` counts.
    """
    if auth_mode == "jwt":
        return False  # the Bearer JWT is the credential, and a page cannot make one up
    return bool(request.cookies) or "Authorization" in request.headers


def check_csrf_token(auth_mode: str) -> None:
    """Require the page's CSRF token (``X-CSRFToken``) on a POST with ambient credentials.

    Raises :class:`~rill.errors.CrossSiteRequest` (403) when it is missing or wrong.
    """
    if not ambient_credentials(auth_mode):
        return
    token = request.headers.get("X-CSRFToken") or request.headers.get("X-CSRF-Token")
    try:
        validate_csrf(token, time_limit=CSRF_TIME_LIMIT)
    except ValidationError:
        raise CrossSiteRequest("This request lacks the page's CSRF token; reload the page "
                               "and try again.", code="csrf_failed") from None


def refuse_cross_site(allowed_origins: list[str], auth_mode: str) -> None:
    """Refuse a state-changing request sent by another site's page (CSRF).

    Follows the Fetch Metadata approach (W3C "Fetch Metadata Request Headers"; OWASP's CSRF
    cheat sheet): a browser says ``Sec-Fetch-Site: cross-site`` (or an ``Origin`` that is not
    ours) for another site's form or fetch. In ``jwt`` mode the Bearer token is the
    credential, so requests are exempt (a page cannot make one up); non-browser clients send
    neither header. Raises :class:`~rill.errors.CrossSiteRequest` (403).
    """
    if auth_mode == "jwt":
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
