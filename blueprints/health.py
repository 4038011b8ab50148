"""Liveness and readiness checks for load balancers and Kubernetes probes."""

from __future__ import annotations

import hmac
import ipaddress

from flask import Blueprint, Response, abort, current_app, jsonify, request

from rill import metrics, state

bp = Blueprint("rill_health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Report that the process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Report whether this worker takes new streams: 503 when draining, at its cap, or when
    the hub's Redis does not answer (``hub``: ``ok`` or ``unavailable``; checked at most
    once a second, within ``RILL_REDIS_TIMEOUT_SECONDS``)."""
    rill = state()
    caps = rill.caps
    full = bool(caps.per_worker) and caps.total >= caps.per_worker
    hub = rill.hub.reachable()
    status = ("draining" if rill.draining else "full" if full
              else "ready" if hub else "hub_unavailable")
    return (jsonify(status=status, streams=caps.total, hub="ok" if hub else "unavailable"),
            200 if status == "ready" else 503)


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """Expose Prometheus metrics: to ``Bearer RILL_METRICS_TOKEN``, else to loopback only."""
    token = current_app.config["RILL_METRICS_TOKEN"]
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(given.encode(), token.encode()):
            abort(404)  # no oracle: it is simply not here for others
    elif not _loopback(request.remote_addr):
        abort(404)
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})


def _loopback(address: str | None) -> bool:
    """Whether ``address`` is a loopback IP; garbage (a forwarded ``X-Forwarded-For`` with
    ``RILL_PROXY_HOPS`` > 0, a Unix socket) is not."""
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False
