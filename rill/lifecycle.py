"""Graceful shutdown of one worker: refuse new streams, let running ones finish, and end the
rest with ``error`` ``shutdown`` before gunicorn's ``graceful_timeout`` runs out.

gunicorn kills the worker with SIGKILL when ``graceful_timeout`` ends, and then no
generator's ``finally`` runs: so the ``shutdown`` events are written a margin before that
deadline, while subscribers can still flush them; a POST still waiting for its upstream's
status line is answered 503 then. With the Redis hub, a client that resumes on another
instance gets the events written so far and the ``shutdown`` error, nothing more: the
generation is not continued anywhere.
"""

from __future__ import annotations

import logging
import time

from flask import Flask

from . import tasks
from .service import RillState

log = logging.getLogger(__name__)


def begin_drain(app: Flask, graceful_timeout: float) -> tasks.Task | None:
    """Start draining ``app``'s Rill (idempotent); return the draining greenlet."""
    state: RillState | None = app.extensions.get("rill")
    if state is None or state.draining:
        return None
    state.draining = True
    margin = min(2.0, graceful_timeout * 0.2)
    log.info("draining: %d generations running, %.0f s to finish", len(state.producers),
             graceful_timeout)
    deadline = time.monotonic() + graceful_timeout - margin
    return tasks.spawn(lambda: _drain(state, deadline))


def _drain(state: RillState, deadline: float) -> None:
    # A POST still waiting for its upstream's status line may yet start a generation.
    while (state.producers or state.opening) and time.monotonic() < deadline:
        tasks.sleep(0.1)
    if state.producers or state.opening:
        log.warning("draining: ending %d generations with a shutdown error, and %d requests "
                    "still opening their upstream with 503", len(state.producers),
                    len(state.opening))
        state.shut_down()
