"""Rill's own application: ``create_app()``, where Rill's rules cover every route.

``rill.wsgi:app`` is one made at import, for ``gunicorn -c python:rill.gunicorn_conf
rill.wsgi:app``; the repo's ``app.py`` (``gunicorn app:app``) is the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from .config import DEFAULTS, from_env
from .extension import Rill


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Create a Rill app: defaults, then ``RILL_*`` environment variables, then ``test_config``.

    Raises :class:`rill.config.ConfigError` naming any environment variable that does not
    parse, and :class:`rill.workers.WorkerSetupError` under a gunicorn setup Rill cannot
    work in.
    """
    app = Flask("rill", static_folder=None, template_folder=None)  # the page has its own
    app.config.from_mapping(DEFAULTS)
    from_env(app.config)
    if test_config is not None:
        app.config.from_mapping(test_config)
    Rill(app, site_wide=True)  # the app is Rill's own: its rules cover every route
    return app
