"""gunicorn settings for this repo's ``gunicorn -c gunicorn.conf.py app:app``: Rill's own.

They ship in the package as :mod:`rill.gunicorn_conf`, so an installed Rill (or a host app
that embeds it) runs with the same settings: ``gunicorn -c python:rill.gunicorn_conf app:app``.
Every setting can be overridden by an environment variable (see that module).
"""

from rill.gunicorn_conf import *  # noqa: F403
