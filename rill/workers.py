"""Refuse, at start, the servers Rill cannot work in, whatever command started them.

Checked when ``Rill(app)`` runs, so under ``gunicorn app:app`` as under Rill's own
``gunicorn -c python:rill.gunicorn_conf``:

- gunicorn's sync worker (and gthread with one thread): every open stream would hold the
  whole worker, so one chat makes every other request of the app wait, and gunicorn's
  ``timeout`` then kills the worker mid-stream with no ``error`` event;
- more than one gunicorn worker process with the memory hub: a stream lives in the worker
  that started it, so a resume or cancel that lands on another worker finds nothing (404).

Other servers (``flask run``, the test client) are not checked.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any


class WorkerSetupError(RuntimeError):
    """This server's worker setup cannot run Rill; the message says what to change.

    A ``RuntimeError`` rather than ``SystemExit``: gunicorn halts on a worker that fails to
    boot with an exception, but would start one that exits again and again.
    """


def gunicorn_settings() -> Any | None:
    """The ``gunicorn.config.Config`` of the gunicorn process loading this app, else None.

    gunicorn loads the app from ``Worker.load_wsgi`` (or, with ``--preload``, from its
    application's ``load``); both hold their settings as ``self.cfg``, found on the stack.
    """
    if "gunicorn.config" not in sys.modules:
        return None
    from gunicorn.config import Config

    frame = sys._getframe(1)
    while frame is not None:
        cfg = getattr(frame.f_locals.get("self"), "cfg", None)
        if isinstance(cfg, Config):
            return cfg
        frame = frame.f_back  # type: ignore[assignment]
    return None


def check(config: Mapping[str, Any], settings: Any | None = None) -> None:
    """Raise :class:`WorkerSetupError` when gunicorn's ``settings`` (found on the stack if
    not given) cannot serve Rill with ``config``."""
    settings = settings if settings is not None else gunicorn_settings()
    if settings is None:
        return
    from gunicorn.workers.gthread import ThreadWorker
    from gunicorn.workers.sync import SyncWorker

    worker = settings.worker_class
    one_thread = issubclass(worker, ThreadWorker) and settings.threads < 2
    if issubclass(worker, SyncWorker) or one_thread:
        kind = "gthread worker with one thread" if one_thread else "sync worker"
        raise WorkerSetupError(
            f"rill: gunicorn's {kind} would give each open stream the whole worker (every "
            "other request waits, and the worker timeout cuts streams). Use the gevent worker "
            "(`-k gevent`, or `-c python:rill.gunicorn_conf`), or gthread with threads for the "
            "streams you expect (`-k gthread --threads 32`).")
    if settings.workers > 1 and not config["RILL_REDIS_URL"]:
        raise WorkerSetupError(
            f"rill: {settings.workers} gunicorn workers need RILL_REDIS_URL: with the memory "
            "hub a stream lives in the worker that started it, and a resume or cancel that "
            "lands on another worker finds nothing. Run Redis (apt-get install redis-server) "
            "and set RILL_REDIS_URL=redis://127.0.0.1:6379/0, or run one worker (`-w 1`).")
