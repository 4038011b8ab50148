"""The ``Rill`` Flask extension: settings, upstream, hub, caps, limits, security, blueprints."""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, request
from werkzeug.exceptions import HTTPException

from . import hub, logs, request_ids, security, upstreams
from .auth import Authenticator, UserLoader
from .config import DEFAULTS, from_env
from .limits import RedisStreamCaps, StreamCaps, client_key, limiter, rate_limit
from .service import RillState


class Rill:
    def __init__(self, app: Flask | None = None, *, url_prefix: str = "",
                 user_loader: UserLoader | None = None) -> None:
        self.url_prefix = url_prefix
        self.user_loader = user_loader
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Configure ``app`` for Rill. Raises ``ValueError`` for an unusable setting."""
        environ: dict[str, Any] = {}
        from_env(environ)  # a host app gets RILL_* from the environment too
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, environ.get(key, value))
        config = app.config
        app.config.setdefault("RATELIMIT_ENABLED", config["RILL_RATELIMIT_ENABLED"])
        storage = config["RILL_RATELIMIT_STORAGE_URI"]
        if config["RILL_REDIS_URL"] and storage == "memory://":
            storage = config["RILL_REDIS_URL"]  # limits shared by every worker and instance
        app.config.setdefault("RATELIMIT_STORAGE_URI", storage)
        # A rate-limit store that is down should not turn requests into 500s; the hub
        # answers 503 hub_unavailable on its own when it is the same Redis.
        app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
        app.extensions["rill"] = RillState(
            config,
            upstream=upstreams.create(config),
            hub=hub.create(config),
            caps=_caps(config),
            auth=Authenticator(config, self.user_loader),
        )
        logs.install([config["RILL_JWT_SECRET"], config["RILL_SECRET_KEY"]])
        request_ids.init_app(app)  # first, so every later hook and log line has the id
        # A host app keeps its own Limiter and Talisman: Rill's limit goes onto the host's
        # limiter, and the host's headers and redirects stand (csp_nonce is Talisman's).
        host_limiters = app.extensions.get("limiter")
        host_talisman = "csp_nonce" in app.jinja_env.globals
        if not host_talisman:
            security.init_app(app)
        security.init_sessions(app)
        security.init_cors(app)
        security.init_csrf(app)

        from blueprints import api, health, page

        if not host_limiters:
            limiter.init_app(app)

        app.register_blueprint(page.bp, url_prefix=self.url_prefix or None)
        app.register_blueprint(api.bp, url_prefix=f"{self.url_prefix}/api")
        app.register_blueprint(health.bp, url_prefix=self.url_prefix or None)
        if host_limiters:  # the limit runs in the wrapper that is the registered view
            host_limit = next(iter(host_limiters)).limit(rate_limit, key_func=client_key)
            app.view_functions["api.chat"] = host_limit(app.view_functions["api.chat"])
        api_prefix = f"{self.url_prefix}/api/"
        previous = app.error_handler_spec[None][None].get(HTTPException)

        @app.errorhandler(HTTPException)
        def api_http_error(error: HTTPException) -> Any:
            """Routing errors (404, 405) under the API prefix answer in JSON too."""
            if request.path.startswith(api_prefix):
                return api.json_http_error(error)
            return previous(error) if previous else error


def _caps(config: Any) -> StreamCaps:
    per_client, per_worker = config["RILL_MAX_STREAMS_PER_CLIENT"], config["RILL_MAX_STREAMS"]
    if config["RILL_REDIS_URL"]:
        return RedisStreamCaps(per_client, per_worker, config["RILL_REDIS_URL"])
    return StreamCaps(per_client, per_worker)


def state() -> RillState:
    """Return the current app's Rill state (inside an app or request context)."""
    return current_app.extensions["rill"]  # type: ignore[no-any-return]
