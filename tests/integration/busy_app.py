"""Rill's own app plus one test-only route that keeps the worker's event loop busy.

``GET /_test/busy?seconds=N`` spins the CPU in its greenlet for N seconds without yielding,
as a worker with a heavy request (or thousands of streams' work) would. Served by gunicorn
in tests/integration/test_leases.py only.
"""

import time

from flask import request

from app import app


@app.get("/_test/busy")
def busy() -> str:
    until = time.monotonic() + float(request.args["seconds"])
    spins = 0
    while time.monotonic() < until:
        spins += 1  # pure Python: holds the event loop, releases the GIL every 5 ms
    return f"spun {spins}"
