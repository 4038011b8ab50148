"""The ``Rill`` Flask extension: settings, upstream, hub, caps, limits, security, blueprints."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, current_app, request
from werkzeug.exceptions import HTTPException

from . import hub, logs, request_ids, security, upstreams, workers
from .auth import Authenticator, UserLoader
from .config import DEFAULTS, from_env
from .limits import (
    STREAMS,
    SUBSCRIBERS,
    Counted,
    RedisStreamCaps,
    StreamCaps,
    events_rate_limit,
    init_limiter,
    rate_limit,
)
from .service import RillState
from .tools import DEFAULT, ToolRegistry

log = logging.getLogger(__name__)


class Rill:
    """Add Rill to a Flask app: ``Rill(app)``, or ``Rill()`` then :meth:`init_app`.

    ``url_prefix`` mounts every route under it (``"/assistant"``); ``user_loader`` returns
    the signed-in user's id or None (a host app's own login, e.g. Flask-Login's
    ``lambda: current_user.get_id()``). ``site_wide=True`` is for an app that is Rill's own
    (``app.py``): Rill's CSP, security headers, https redirect and sessions then cover every
    route. Otherwise Rill is a guest, and they cover only its blueprints (``rill_page``,
    ``rill_api``, ``rill_health``); the host's routes, settings and responses stay as they
    were.

    ``tools`` is where the app's server-side tools are registered: by default
    :data:`rill.tools.DEFAULT`, where ``@rill.tool`` puts them; a host embedding two Rill
    apps with different tools gives each its own :class:`~rill.tools.ToolRegistry`.
    """

    def __init__(self, app: Flask | None = None, *, url_prefix: str = "",
                 user_loader: UserLoader | None = None, site_wide: bool = False,
                 tools: ToolRegistry | None = None) -> None:
        self.url_prefix = url_prefix.rstrip("/")
        self.user_loader = user_loader
        self.site_wide = site_wide
        self.tools = tools if tools is not None else DEFAULT
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Configure ``app`` for Rill.

        Raises ``ValueError`` for an unusable setting (a ``RILL_TOOLS`` module that does not
        import, a tool whose name is taken), and
        :class:`~rill.workers.WorkerSetupError` under a gunicorn setup Rill cannot work in
        (a sync worker; several workers with the memory hub).
        """
        environ: dict[str, Any] = {}
        from_env(environ)  # a host app gets RILL_* from the environment too
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, environ.get(key, value))
        config = app.config
        workers.check(config)
        from .blueprints import api, health, page

        self.tools.load_modules(config["RILL_TOOLS"])
        if len(self.tools):
            log.info("tools: %s", ", ".join(self.tools.names()))

        scope = security.Scope(app, None if self.site_wide else
                               (api.bp.name, page.bp.name, health.bp.name))
        app.extensions["rill"] = RillState(
            config,
            upstream=upstreams.create(config),
            hub=hub.create(config),
            caps=_caps(config, STREAMS, config["RILL_MAX_STREAMS_PER_CLIENT"],
                       config["RILL_MAX_STREAMS"]),
            subscriber_caps=_caps(config, SUBSCRIBERS,
                                  config["RILL_MAX_SUBSCRIBERS_PER_CLIENT"], 0),
            auth=Authenticator(config, self.user_loader),
            login_url=config["RILL_LOGIN_URL"] or _login_view(app),
            tools=self.tools,
        )
        logs.install([config["RILL_JWT_SECRET"], config["RILL_SECRET_KEY"]])
        # A host app keeps its own Talisman: its headers stand (csp_nonce is Talisman's).
        security.init_proxy_hops(scope)
        request_ids.init_app(scope)  # early, so every later hook and log line has the id
        if "csp_nonce" not in app.jinja_env.globals:
            security.init_app(scope)
        if self.site_wide:
            security.init_sessions(app)
        security.init_cors(app, f"{self.url_prefix}/api")
        security.init_csrf(app, api.bp)

        app.register_blueprint(page.bp, url_prefix=self.url_prefix or None)
        app.register_blueprint(api.bp, url_prefix=f"{self.url_prefix}/api")
        app.register_blueprint(health.bp, url_prefix=self.url_prefix or None)
        app.extensions["rill"].limiter = init_limiter(app, {
            f"{api.bp.name}.chat": rate_limit, f"{api.bp.name}.events": events_rate_limit})
        api_prefix = f"{self.url_prefix}/api/"
        previous = app.error_handler_spec[None][None].get(HTTPException)

        @app.errorhandler(HTTPException)
        def api_http_error(error: HTTPException) -> Any:
            """Routing errors (404, 405) under the API prefix answer in JSON too."""
            if request.path.startswith(api_prefix):
                return api.json_http_error(error)
            return previous(error) if previous else error


def _login_view(app: Flask) -> str:
    """Flask-Login's ``login_view`` (an endpoint name), if the app uses Flask-Login."""
    manager = getattr(app, "login_manager", None)
    return str(getattr(manager, "login_view", None) or "")


def _caps(config: Any, counted: Counted, per_client: int, per_worker: int) -> StreamCaps:
    if config["RILL_REDIS_URL"]:
        return RedisStreamCaps(per_client, per_worker, config["RILL_REDIS_URL"], counted,
                               timeout=config["RILL_REDIS_TIMEOUT_SECONDS"])
    return StreamCaps(per_client, per_worker, counted)


def state() -> RillState:
    """Return the current app's Rill state (inside an app or request context)."""
    return current_app.extensions["rill"]  # type: ignore[no-any-return]
