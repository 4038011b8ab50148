"""What Rill costs per request as a guest in a host app, next to Rill's own app.

Times, in one process through Flask's test client (no network), CPU per request for:
a host page with and without Rill added (what Rill's presence costs the host's own routes),
and Rill's page and a short stream (demo upstream, 3 tokens) in Rill's own app and in the
host. Run: ``.venv/bin/python bench/embedded.py`` (about 20 s).
"""

from __future__ import annotations

import time

from flask import Flask

from rill import Rill
from rill.app import create_app

DEMO = {"RILL_UPSTREAM": "demo", "RILL_DEMO_TTFT_MS": 0, "RILL_DEMO_TOKENS_PER_SECOND": 100_000,
        "RILL_RATELIMIT_ENABLED": False, "RILL_MAX_STREAMS_PER_CLIENT": 0}
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def host(with_rill: bool) -> Flask:
    app = Flask("host")
    app.config.update(SECRET_KEY="k", **DEMO)

    @app.get("/home")
    def home() -> str:
        return "host page"

    if with_rill:
        Rill(app, url_prefix="/assistant")
    return app


def cpu_us(app: Flask, method: str, path: str, n: int, **kwargs) -> float:
    client = app.test_client()
    for _ in range(50):  # warm up
        client.open(path, method=method, **kwargs).get_data()
    start = time.process_time()
    for _ in range(n):
        client.open(path, method=method, **kwargs).get_data()
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    own, plain, guest = create_app(DEMO), host(False), host(True)
    rows = [
        ("host page, no Rill", cpu_us(plain, "GET", "/home", 5000)),
        ("host page, Rill added", cpu_us(guest, "GET", "/home", 5000)),
        ("Rill's page, own app", cpu_us(own, "GET", "/", 1000)),
        ("Rill's page, in the host", cpu_us(guest, "GET", "/assistant/", 1000)),
        ("3-token stream, own app", cpu_us(own, "POST", "/api/chat", 1000, json=CHAT)),
        ("3-token stream, in the host", cpu_us(guest, "POST", "/assistant/api/chat", 1000,
                                               json=CHAT)),
    ]
    print("| request | CPU µs per request |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value:.0f} |")


if __name__ == "__main__":
    main()
