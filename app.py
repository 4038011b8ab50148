"""The Rill application factory; ``gunicorn app:app`` serves the module-level ``app``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from rill import Rill, logs
from rill.config import DEFAULTS, from_env


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Create a Rill app: defaults, then ``RILL_*`` environment variables, then ``test_config``.

    Raises :class:`rill.config.ConfigError` naming any environment variable that does not
    parse.
    """
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    from_env(app.config)
    if test_config is not None:
        app.config.from_mapping(test_config)
    Rill(app)
    return app


logs.basic_config()  # JSON lines on stdout, unless gunicorn configured logging already
app = create_app()
