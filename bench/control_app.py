"""Rill's app with its refusal of a second memory-hub worker lifted: the benchmark's control
for the Redis hub's two-worker target, ``rill-2w`` (two gevent workers on one core with no
Redis at all: what the second process costs by itself).

Not a deployment: with the memory hub a resume or cancel that lands on the other worker
finds nothing (``rill.workers``). The benchmark reads each stream on the connection that
started it, so its scenarios but ``tabs`` run the same on it.
"""

import rill.workers

rill.workers.check = lambda config, settings=None: None  # before the app is built

from app import app  # noqa: E402

__all__ = ["app"]
