"""The WSGI app of an installed Rill: ``gunicorn -c python:rill.gunicorn_conf rill.wsgi:app``."""

from . import logs
from .app import create_app

logs.basic_config()  # JSON lines on stdout, unless gunicorn configured logging already
app = create_app()
