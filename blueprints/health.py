"""Liveness and readiness checks for load balancers and Kubernetes probes."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from rill import state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Report that the process is alive."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Report whether this worker takes new streams (503 when draining or at its cap)."""
    rill = state()
    caps = rill.caps
    full = bool(caps.per_worker) and caps.total >= caps.per_worker
    status = "draining" if rill.draining else "full" if full else "ready"
    return jsonify(status=status, streams=caps.total), 200 if status == "ready" else 503
