"""Rill's one error hierarchy.

Every failure Rill reports is a :class:`RillError` with a stable ``code`` (snake_case, part
of the public API) and a ``message`` fit to show a person. The web edge turns it into an
HTTP response ``{"error": {"code", "message"}}`` before the stream starts, or into an SSE
``error`` event after (see :mod:`rill.sse`). Messages never carry upstream response bodies,
API keys or tracebacks.
"""

from __future__ import annotations

from typing import Any


class RillError(Exception):
    """A failure with an HTTP ``status``, a stable ``code`` and a human ``message``."""

    status = 500
    code = "internal"
    message = "Something went wrong inside Rill. Please try again."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.message = message or self.message
        self.code = code or self.code
        self.param = param
        self.retry_after = retry_after
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON error object ``{"code", "message"[, "param"][, "retry_after"]}``.

    ``retry_after`` is in seconds, as the HTTP ``Retry-After`` header.
    """
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.param is not None:
            body["param"] = self.param
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body


class InvalidRequest(RillError):
    status = 400
    code = "invalid_request"
    message = "The request is not valid."


class ClientToolsDisabled(InvalidRequest):
    """A request used tools (``tools``, ``tool_choice``, a ``tool`` message, an assistant's
    ``tool_calls``) while ``RILL_CLIENT_TOOLS`` is off."""

    code = "client_tools_disabled"
    message = ("Tool calling is not enabled on this server: `tools`, `tool_choice`, `tool` "
               "messages and assistant `tool_calls` are refused.")


class RequestTimeout(RillError):
    status = 408
    code = "request_timeout"
    message = "The request body did not arrive in time."


class PayloadTooLarge(RillError):
    status = 413
    code = "body_too_large"
    message = "The request body is too large."


class UnsupportedMediaType(RillError):
    status = 415
    code = "unsupported_media_type"
    message = "Send the request body as JSON with Content-Type: application/json."


class CrossSiteRequest(RillError):
    status = 403
    code = "cross_site_request"
    message = "This request came from another site's page and was refused."


class TooManyStreams(RillError):
    status = 429
    code = "too_many_streams"
    message = "Too many answers are streaming at once. Wait for one to finish and try again."


class TooManySubscribers(RillError):
    status = 429
    code = "too_many_subscribers"
    message = "Too many streams are followed at once. Close one and try again."


class RateLimited(RillError):
    status = 429
    code = "rate_limited"
    message = "Too many requests. Please slow down and try again shortly."


class Unavailable(RillError):
    status = 503
    code = "unavailable"
    message = "This server is not taking new answers right now. Please try again shortly."


class StreamNotFound(RillError):
    status = 404
    code = "stream_not_found"
    message = "There is no such stream, or it has expired."


class HubUnavailable(RillError):
    status = 503
    code = "hub_unavailable"
    message = "The stream store is unreachable right now; please try again shortly."


class EventsExpired(RillError):
    status = 410
    code = "events_expired"
    message = "The events after that id are no longer kept; start the answer again."


class ProducerLost(RillError):
    code = "producer_lost"
    message = "The server generating this answer stopped; the answer is incomplete."


class Shutdown(RillError):
    status = 503
    code = "shutdown"
    # The generation was stopped: nothing more will come, here or elsewhere (with Redis a
    # resume elsewhere replays the answer so far, ending with this event).
    message = "The server restarted; the answer is incomplete. Please send your message again."


class UpstreamError(RillError):
    """The model provider failed. Before the first byte: 502; after: an ``error`` event."""

    status = 502
    code = "upstream_error"
    message = "The model provider returned an error. Please try again."


class UpstreamAuthError(UpstreamError):
    code = "upstream_auth"
    message = "The model provider refused Rill's credentials; ask the operator to check them."


class UpstreamRejected(UpstreamError):
    code = "upstream_rejected"
    message = "The model provider rejected the request."


class UpstreamRateLimited(UpstreamError):
    status = 429
    code = "upstream_rate_limited"
    message = "The model provider is rate limiting requests. Please try again shortly."


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"
    message = "The model provider could not be reached. Please try again shortly."


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    message = "The model provider did not answer in time. Please try again."


class UpstreamCut(UpstreamError):
    code = "upstream_cut"
    message = "The model provider's connection broke off mid-answer; the answer is incomplete."


class UpstreamMalformed(UpstreamError):
    """The provider's stream broke the chat completions format (see
    :class:`~rill.upstreams.chunks.ChunkParser`), or sent an event over
    ``RILL_UPSTREAM_MAX_EVENT_BYTES``."""

    code = "upstream_malformed"
    message = ("The model provider sent a malformed reply mid-answer; the answer is "
               "incomplete.")


class UpstreamUnsupported(UpstreamError):
    """The provider answered in a form Rill does not relay: tool calls to a request that
    offered no tools, or a legacy ``function_call``."""

    code = "upstream_unsupported"
    message = ("The model provider answered with a tool call this request did not offer, "
               "which Rill does not relay; the answer is incomplete.")


class UpstreamStalled(UpstreamError):
    code = "upstream_stalled"
    message = "The model provider stopped sending; the answer is incomplete."


class StreamTimeout(RillError):
    status = 504
    code = "timeout"
    message = "The answer took longer than this server allows and was stopped."


class ToolStepsExceeded(RillError):
    code = "tool_steps_exceeded"
    # After the model's last allowed step still asked for server-side tools: those calls
    # are not run, and the answer so far stands (RILL_MAX_TOOL_STEPS).
    message = ("The answer needed more model steps with tools than this server allows; it "
               "stops here, incomplete.")
