"""The repo's entry point: ``gunicorn -c gunicorn.conf.py app:app`` serves ``app``.

The application lives in the package (:mod:`rill.app`, :mod:`rill.wsgi`), so an installed
Rill, which has no top-level ``app`` module, runs the same one as ``rill.wsgi:app``.
"""

from rill.app import create_app
from rill.wsgi import app

__all__ = ["app", "create_app"]
