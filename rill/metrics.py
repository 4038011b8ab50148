"""Prometheus metrics, summed across gunicorn workers (prometheus_client multiprocess mode).

``gunicorn.conf.py`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder before workers
start and marks dead workers in ``child_exit``; ``GET /metrics`` then reports every worker.
``rill_active_streams`` (live sum) is the autoscaling signal.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

ACTIVE = Gauge("rill_active_streams", "Generations running now.", multiprocess_mode="livesum")
STREAMS = Counter("rill_streams", "Generations ended, by outcome.", ["outcome"])
TTFT = Histogram("rill_ttft_seconds", "Time from the request to the first token (s).",
                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))
DURATION = Histogram("rill_stream_duration_seconds", "Length of a generation (s).",
                     buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800))
TOKENS = Counter("rill_tokens", "Completion tokens relayed.")
UPSTREAM_ERRORS = Counter("rill_upstream_errors", "Upstream failures, by code.", ["code"])
RATE_LIMITED = Counter("rill_rate_limited", "Requests refused by a rate limit or cap.")
DISCONNECTS = Counter("rill_client_disconnects", "Clients that left mid-stream.")
RESUMES = Counter("rill_resumes", "Subscriptions that resumed a stream.")
REFUSED = Counter("rill_refused_requests", "Requests answered with a JSON error before any "
                  "stream, by code (a limit's refusals: body_too_large, request_timeout, "
                  "too_many_subscribers, ...).", ["code"])
SSE_CONNECTIONS = Gauge("rill_sse_connections", "Event-stream responses open now (POSTs and "
                        "resumes; a generation may have several, or none).",
                        multiprocess_mode="livesum")
TOOL_CALLS = Counter("rill_tool_calls", "Server-side tool calls run, by tool and outcome (ok, "
                     "failed: the model got ok false; a tool no one has is `(unknown)`).",
                     ["tool", "outcome"])
SEND_TIMEOUTS = Counter("rill_send_timeouts", "Clients disconnected for taking nothing for "
                        "RILL_SEND_TIMEOUT_SECONDS.")


def outcome(event: str, payload: dict[str, object]) -> str:
    """The outcome label of a terminal event: completed, cancelled, or the error code."""
    if event == "done":
        return "cancelled" if payload.get("finish_reason") == "cancelled" else "completed"
    return str(payload.get("code", "internal"))


def exposition() -> tuple[bytes, str]:
    """The metrics text of every worker (or of this process outside gunicorn)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
