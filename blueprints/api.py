"""The streaming API: ``POST /api/chat`` starts a stream, which can be resumed and cancelled."""

from __future__ import annotations

import contextlib
import math
import secrets
import sys
import time

from flask import Blueprint, Response, current_app, jsonify, request, stream_with_context
from flask_limiter import RateLimitExceeded
from gevent import monkey
from werkzeug.exceptions import HTTPException

from rill import chat_request, metrics, relay, request_ids, state, steps
from rill.auth import AuthError, current_user
from rill.errors import InvalidRequest, PayloadTooLarge, RateLimited, RillError
from rill.limits import client_key, read_body, stream_cap
from rill.openapi import document as openapi_document
from rill.security import check_csrf_token, refuse_cross_site

bp = Blueprint("rill_api", __name__)

SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


@bp.post("/chat")  # rate-limited by RILL_RATE_LIMIT (rill.limits.init_limiter)
def chat() -> Response:
    """Start a chat completion and stream it as Server-Sent Events."""
    config = current_app.config
    most = config["RILL_MAX_BODY_BYTES"]
    if (request.content_length or 0) > most:
        raise PayloadTooLarge(f"The request body is larger than {most} bytes.")
    raw = read_body(request.stream, most, config["RILL_BODY_TIMEOUT_SECONDS"])
    body = chat_request.parse_body(raw, request.content_type, most)
    params = chat_request.validate(body, config)
    rill = state()
    rill.refuse_when_draining()
    user = current_user()
    # Server-side tools this user is offered (their `allow` runs here, in the request).
    params, tool_steps = steps.plan(params, rill.tools, rill.upstream, user,
                                    current_app._get_current_object())  # type: ignore[attr-defined]
    stream_id = secrets.token_urlsafe(16)  # 128 random bits: the stream's capability
    slot = rill.caps.acquire(client_key(), stream_id, cap=stream_cap())
    try:
        upstream = rill.open_upstream(lambda: rill.upstream.open(params),
                                      request.environ.get("gunicorn.socket"))
    except relay.ClientLeft:  # nobody to answer; 499 as nginx logs it
        slot.release()
        metrics.DISCONNECTS.inc()
        return Response(status=499)
    except RillError as error:
        slot.release()
        if error.code.startswith("upstream_"):
            metrics.UPSTREAM_ERRORS.labels(error.code).inc()
        raise
    except BaseException:
        slot.release()
        raise
    try:
        rill.start_generation(stream_id, upstream, owner=user, on_finish=slot.release,
                              log_fields={"request_id": request_ids.current(),
                                          "client": client_key()},
                              steps=tool_steps)
    except BaseException:
        upstream.close()
        slot.release()
        raise
    return _subscription(stream_id, after=-1)


@bp.get("/chat/<stream_id>/events")  # rate-limited by RILL_EVENTS_RATE_LIMIT
def events(stream_id: str) -> Response:
    """Replay a stream after ``Last-Event-ID`` (or ``?last_event_id``), then follow it live."""
    rill = state()
    after = chat_request.last_event_id(
        request.headers.get("Last-Event-ID", request.args.get("last_event_id")))
    rill.check_owner(stream_id, current_user())  # 404 before the stream starts
    if after >= 0 and relay.nothing_follows(rill.hub, stream_id, after):  # -1: `start` follows
        return Response(status=204)  # an EventSource stops reconnecting
    subscriber = secrets.token_hex(8)
    slot = rill.subscriber_caps.acquire(client_key(), f"{stream_id} {subscriber}")
    try:
        response = _subscription(stream_id, after=after, subscriber=subscriber)
    except BaseException:
        slot.release()
        raise
    response.call_on_close(slot.release)
    metrics.RESUMES.inc()
    return response


@bp.get("/openapi.json")
def openapi() -> Response:
    """Describe this API as an OpenAPI 3.1 document."""
    return jsonify(openapi_document(current_app.config))


@bp.post("/chat/<stream_id>/cancel")
def cancel(stream_id: str) -> tuple[Response, int]:
    """Cancel a stream's generation; its subscribers get ``done`` with ``cancelled``."""
    rill = state()
    rill.check_owner(stream_id, current_user())
    rill.hub.request_cancel(stream_id)
    return jsonify(stream_id=stream_id, status="cancelling"), 202


def _subscription(stream_id: str, after: int, subscriber: str = "") -> Response:
    """Stream ``stream_id`` to this client; leave the stream when the client does."""
    config, hub = current_app.config, state().hub
    subscriber = subscriber or secrets.token_hex(8)
    gone = False

    def on_disconnect() -> None:
        nonlocal gone
        gone = True
        metrics.DISCONNECTS.inc()
        with contextlib.suppress(RillError):  # the subscriber leaves in its finally too
            hub.leave(stream_id, subscriber)  # the producer may be orphaned now

    sock = request.environ.get("gunicorn.socket")
    watcher = None
    if sock is not None and monkey.is_module_patched("socket"):
        watcher = relay.watch_disconnect(sock, on_disconnect)

    def close() -> None:
        metrics.SSE_CONNECTIONS.dec()
        if watcher is not None:
            # Dead before gunicorn reads the next request from this socket: two greenlets
            # may not wait on one socket.
            watcher.kill(block=True, timeout=1)

    body = relay.subscribe(
        hub, stream_id, after, subscriber,
        heartbeat=config["RILL_HEARTBEAT_SECONDS"],
        lease=config["RILL_PRODUCER_LEASE_SECONDS"],
        batch=config["RILL_REPLAY_BATCH"],
        client_gone=lambda: gone,
    )
    if sock is not None and watcher is not None:  # gevent: disconnect one that takes nothing
        body = relay.send_deadline(body, sock, config["RILL_SEND_TIMEOUT_SECONDS"],
                                   metrics.SEND_TIMEOUTS.inc)
    response = Response(stream_with_context(body), mimetype="text/event-stream",
                        headers=SSE_HEADERS)
    metrics.SSE_CONNECTIONS.inc()
    response.call_on_close(close)
    return response


@bp.before_request
def authenticate() -> None:
    """Refuse cross-site POSTs, then authenticate (RILL_AUTH); failures are 401/403."""
    if request.endpoint == f"{bp.name}.openapi":
        return
    if request.method == "POST":
        mode = state().auth.mode
        refuse_cross_site(current_app.config["RILL_CORS_ORIGINS"], mode)
        check_csrf_token(mode)
    current_user()


@bp.errorhandler(RillError)
def rill_error(error: RillError) -> tuple[Response, int]:
    response, status = error_response(error)
    if error.code in ("too_many_streams", "too_many_subscribers"):
        metrics.RATE_LIMITED.inc()
    if isinstance(error, AuthError):
        response.headers["WWW-Authenticate"] = error.challenge
    return response, status


@bp.errorhandler(HTTPException)
def http_error(error: HTTPException) -> tuple[Response, int]:
    return json_http_error(error)


@bp.errorhandler(Exception)
def internal_error(error: Exception) -> tuple[Response, int]:
    if _malformed_body(error):
        return error_response(InvalidRequest(
            "The request body is not valid HTTP/1.1 (chunked encoding).", code="invalid_body"))
    current_app.logger.exception("unhandled error in the API", exc_info=error)
    return error_response(RillError())


def _malformed_body(error: Exception) -> bool:
    """Whether ``error`` is gunicorn's parser failing on the request body as the view read
    it (a bad chunk size, a missing terminator, a body cut short): the client's fault."""
    http_errors = sys.modules.get("gunicorn.http.errors")  # loaded if gunicorn parsed it
    # The chunk errors are IOErrors, not ParseExceptions, before gunicorn 22.
    return http_errors is not None and isinstance(error, (
        http_errors.ParseException, http_errors.NoMoreData, http_errors.InvalidChunkSize,
        http_errors.ChunkMissingTerminator))


@bp.errorhandler(RateLimitExceeded)
def rate_limited(error: RateLimitExceeded) -> tuple[Response, int]:
    metrics.RATE_LIMITED.inc()
    current = state().limiter.current_limit
    wait = max(1, math.ceil(current.reset_at - time.time())) if current else 60
    return error_response(RateLimited(
        f"Too many requests (limit: {error.description}). Try again in {wait} s.",
        retry_after=wait))


def json_http_error(error: HTTPException) -> tuple[Response, int]:
    """Render a werkzeug HTTP error (404, 405, ...) as Rill's JSON error, with its headers
    (a 405's ``Allow``, RFC 9110 section 15.5.6)."""
    code = (error.name or "error").lower().replace(" ", "_")
    status = error.code or 500
    response, status = error_response(RillError(error.description, code=code), status)
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response, status


def error_response(error: RillError, status: int | None = None) -> tuple[Response, int]:
    """Render ``error`` as ``{"error": {"code", "message"}}`` with its status, counted in
    ``rill_refused_requests_total``."""
    metrics.REFUSED.labels(error.code).inc()
    response = jsonify(error=error.to_dict())
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    response.headers["Cache-Control"] = "no-store"
    return response, status or error.status
