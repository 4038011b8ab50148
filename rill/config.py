"""Rill's settings: one table of names, defaults, types and meanings.

Every key is ``RILL_*`` in ``app.config`` (namespaced, so a host Flask app's own keys never
collide) and may be set by an environment variable of the same name. The README's
configuration table is this table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _user_limits(raw: str) -> dict[str, dict[str, Any]]:
    value = json.loads(raw)
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValueError('expected JSON like {"alice": {"rate_limit": "100/minute", '
                         '"max_streams": 10}}')
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("expected a whole number above 0")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:  # NaN too
        raise ValueError("expected a number above 0")
    return value


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"expected one of: {', '.join(choices)}")
        return raw
    return parse


def _str_list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[str], Any]
    meaning: str


SETTINGS: tuple[Setting, ...] = (
    Setting("RILL_UPSTREAM", "auto", str,
            "`openai`, `demo`, or `auto`: `openai` when OPENAI_API_KEY or OPENAI_BASE_URL "
            "is set, else the offline demo."),
    Setting("RILL_MODEL", "gpt-4o-mini", str,
            "Model used when a request names none (the demo always answers as `rill-demo`)."),
    Setting("RILL_MODELS", [], _str_list,
            "Comma-separated allow-list of models a request may name; empty: only "
            "RILL_MODEL; `*` allows any model (on your API key)."),
    Setting("RILL_UPSTREAM_CONNECT_TIMEOUT_SECONDS", 10.0, float,
            "Time to connect to the upstream (and, for the response headers, "
            "RILL_STALL_TIMEOUT_SECONDS); past it the request fails with 504."),
    Setting("RILL_UPSTREAM_MAX_RETRIES", 2, int,
            "Retries before the first byte, by the OpenAI SDK's rules (connection errors, "
            "408, 409, 429, 5xx) and backoff, or after the upstream's Retry-After; waits "
            "bounded by RILL_UPSTREAM_RETRY_WAIT_SECONDS."),
    Setting("RILL_UPSTREAM_RETRY_WAIT_SECONDS", 10.0, float,
            "Most time, in all, spent waiting between retries before the first byte; a "
            "retry whose wait (the upstream's Retry-After, or the backoff) does not fit is "
            "not made, and the client gets the error with the upstream's Retry-After."),
    Setting("RILL_UPSTREAM_MAX_EVENT_BYTES", 1_048_576, _positive_int,
            "Longest line or event an upstream stream may send, in bytes; a longer one ends "
            "the stream with `upstream_malformed` (the text before it is kept)."),
    Setting("RILL_DEMO_TTFT_MS", 400, int, "Demo upstream: time to first token, in ms."),
    Setting("RILL_DEMO_TOKENS_PER_SECOND", 40.0, float,
            "Demo upstream: tokens per second after the first."),
    Setting("RILL_HEARTBEAT_SECONDS", 15.0, float,
            "Seconds of silence after which a `: ping` comment is sent."),
    Setting("RILL_STALL_TIMEOUT_SECONDS", 300.0, float,
            "Seconds without an upstream chunk after which the stream ends with "
            "`upstream_stalled` (reasoning models may think for minutes)."),
    Setting("RILL_STREAM_MAX_SECONDS", 1800.0, float,
            "Longest a stream may last; then it ends with `timeout`."),
    Setting("RILL_REDIS_URL", "", str,
            "Redis for the stream hub, rate limits and stream caps (`redis://host:6379/0`; "
            "TLS and a password as managed services want them: "
            "`rediss://:password@host:6380/0`, plus `?ssl_ca_certs=/path/ca.pem` for a private "
            "CA; or `redis+cluster://host:port[,host:port…]` for a Redis Cluster); empty keeps "
            "streams in this worker's memory."),
    Setting("RILL_REDIS_TIMEOUT_SECONDS", 2.0, float,
            "Longest wait for Redis to connect or answer (every client Rill makes; the "
            "pub/sub listener waits for messages without one); past it: 503 or `error` "
            "`hub_unavailable`."),
    Setting("RILL_ORPHAN_GRACE_SECONDS", 30.0, float,
            "How long a generation runs on after its last subscriber leaves, so a reconnect "
            "can resume it; then the upstream is cancelled. 0 cancels at once."),
    Setting("RILL_STREAM_MAX_EVENTS", 10_000, int,
            "Events a stream keeps for replay (runs of tokens are merged into one event)."),
    Setting("RILL_STREAM_TTL_SECONDS", 600.0, float,
            "How long a finished stream can still be replayed."),
    Setting("RILL_PRODUCER_LEASE_SECONDS", 5.0, float,
            "With Redis, each worker renews one lease (from a thread, every sixth of it); "
            "within it of a worker's death, subscribers elsewhere get `producer_lost`."),
    Setting("RILL_REPLAY_BATCH", 256, int, "Most events sent in one write when replaying."),
    Setting("RILL_AUTH", "none", str,
            "`none`, `jwt` (Bearer JWTs) or `header` (a trusted proxy's user header); a host "
            "app may pass `user_loader` instead."),
    Setting("RILL_JWT_SECRET", "", str, "HS256 secret for `jwt`."),
    Setting("RILL_JWT_PUBLIC_KEY", "", str, "PEM public key for `jwt` (RS256/ES256)."),
    Setting("RILL_JWT_JWKS_URL", "", str,
            "JWKS URL for `jwt`; cached, refetched on an unknown `kid`."),
    Setting("RILL_JWT_JWKS_COOLDOWN_SECONDS", 30.0, float,
            "Least time between two JWKS refetches (PyJWT 2.14 or later; older ones refetch "
            "on every unknown `kid`)."),
    Setting("RILL_JWT_ISSUER", "", str, "Required `iss`, if set."),
    Setting("RILL_JWT_AUDIENCE", "", str, "Required `aud`, if set."),
    Setting("RILL_JWT_SCOPE", "", str, "A scope the token's `scope` claim must hold (403)."),
    Setting("RILL_JWT_LEEWAY_SECONDS", 30.0, float, "Clock skew allowed on `exp`/`nbf`."),
    Setting("RILL_AUTH_HEADER", "X-Forwarded-User", str, "The user header for `header`."),
    Setting("RILL_TRUSTED_PROXIES", ["127.0.0.1/32", "::1/128"], _str_list,
            "Peers (addresses or CIDRs) whose `RILL_AUTH_HEADER` and `X-Request-ID` are "
            "believed."),
    Setting("RILL_SECRET_KEY", "", str,
            "Signs CSRF tokens (Flask's SECRET_KEY, unless the app has one); empty: made per "
            "process, or shared through Redis."),
    Setting("RILL_METRICS_TOKEN", "", str,
            "Bearer token that may read /metrics; empty: only loopback peers may."),
    Setting("RILL_CORS_ORIGINS", [], _str_list,
            "Comma-separated origins whose pages may call the API (CORS); empty: none."),
    Setting("RILL_MAX_BODY_BYTES", 1_048_576, int, "Largest request body, in bytes (413)."),
    Setting("RILL_BODY_TIMEOUT_SECONDS", 10.0, float,
            "Time a request body has to arrive in full; past it, 408 `request_timeout` and "
            "the connection is closed."),
    Setting("RILL_SEND_TIMEOUT_SECONDS", 30.0, float,
            "Time a stream's client may take nothing before it is disconnected (counted in "
            "`rill_send_timeouts_total`); its generation then runs on for "
            "RILL_ORPHAN_GRACE_SECONDS, as after any leave."),
    Setting("RILL_MAX_MESSAGES", 256, int, "Most messages in one request."),
    Setting("RILL_MAX_MESSAGE_CHARS", 100_000, int, "Most characters in one message."),
    Setting("RILL_MAX_TOTAL_CHARS", 400_000, int, "Most characters in all messages together."),
    Setting("RILL_CLIENT_TOOLS", False, _bool,
            "Accept OpenAI-style tool calling from clients: `tools`, `tool_choice`, `tool` "
            "messages and assistant `tool_calls` in a request, and the upstream's tool calls "
            "streamed back as `tool_call` events; off: such a request is a 400 "
            "`client_tools_disabled`."),
    Setting("RILL_MAX_TOOLS", 32, _positive_int, "Most tools in one request's `tools`."),
    Setting("RILL_MAX_TOOL_SCHEMA_BYTES", 16_384, _positive_int,
            "Largest tool definition (its `function`: name, description and JSON Schema "
            "`parameters`) as compact JSON, in bytes."),
    Setting("RILL_MAX_TOOL_CALLS", 64, _positive_int,
            "Most tool calls in one assistant message of a request."),
    Setting("RILL_MAX_TOKENS", 4096, int,
            "Largest `max_tokens` a request may ask for, and the `max_tokens` sent upstream "
            "when it names none (keep it within what your model can produce)."),
    Setting("RILL_MAX_TOKENS_PARAM", "auto", _choice("auto", "max_tokens",
                                                     "max_completion_tokens"),
            "The request field that carries the length cap upstream; `auto`: "
            "`max_completion_tokens` for api.openai.com (its reasoning models refuse "
            "`max_tokens`), `max_tokens` for any other server (Ollama reads only that)."),
    Setting("RILL_RATE_LIMIT", "20/minute;300/hour", str,
            "flask-limiter rate limit on POST /api/chat, per client."),
    Setting("RILL_EVENTS_RATE_LIMIT", "120/minute;2000/hour", str,
            "flask-limiter rate limit on GET /api/chat/<id>/events, per client (room for "
            "several tabs' EventSource reconnects)."),
    Setting("RILL_RATELIMIT_ENABLED", True, _bool, "`false` turns rate limiting off."),
    Setting("RILL_RATELIMIT_STORAGE_URI", "memory://", str,
            "flask-limiter storage; RILL_REDIS_URL when that is set and this is left as is. "
            "While it is unreachable or refuses writes, each worker counts in its own memory "
            "(one warning in the log) and goes back to it once it answers."),
    Setting("RILL_USER_LIMITS", {}, _user_limits,
            'Per-user overrides, JSON: `{"alice": {"rate_limit": "100/minute", '
            '"max_streams": 10}}` (user ids as RILL_AUTH gives them).'),
    Setting("RILL_MAX_STREAMS_PER_CLIENT", 4, int,
            "Concurrent streams per client; 0 means unlimited (429 `too_many_streams`)."),
    Setting("RILL_MAX_SUBSCRIBERS_PER_CLIENT", 16, int,
            "Concurrent GET /api/chat/<id>/events subscriptions per client (resumes, other "
            "tabs); 0 means unlimited (429 `too_many_subscribers`)."),
    Setting("RILL_MAX_STREAMS", 5000, int,
            "Concurrent streams per worker; 0 means unlimited (503 `unavailable`)."),
    Setting("RILL_PROXY_HOPS", 0, int,
            "Trusted reverse proxies in front of Rill; X-Forwarded-For/-Proto/-Host are "
            "honoured (through werkzeug's ProxyFix) only when > 0; gunicorn's own "
            "`FORWARDED_ALLOW_IPS` follows it (empty at 0)."),
    Setting("RILL_FORCE_HTTPS", None, _bool,
            "Redirect plain-HTTP requests to https, except to loopback hosts "
            "(127.0.0.1, localhost, ::1) and the health checks. Unset: on for Rill's own app, "
            "off inside a host app (whose TLS and redirects are its own)."),
    Setting("RILL_CSP_SOURCES", [], _str_list,
            "Comma-separated origins Rill's page may also load scripts, styles, fonts and "
            "images from (a host layout's CDN, say); empty: its own origin only."),
    Setting("RILL_TOOLS", [], _str_list,
            "Comma-separated modules (importable names, `myapp.tools`) imported at start; "
            "their `@rill.tool` functions become server-side tools. A module that does not "
            "import stops the start."),
    Setting("RILL_TOOL_TIMEOUT_SECONDS", 30.0, _positive_float,
            "Longest a server-side tool may run (a tool's own `timeout` overrides it); past "
            "it the model gets an `ok: false` result and the tool is stopped."),
    Setting("RILL_TOOL_RESULT_MAX_BYTES", 16_384, _positive_int,
            "Largest tool result content the model and the page get, in UTF-8 bytes; a "
            "longer one is cut and ends with a `[truncated …]` mark."),
    Setting("RILL_MAX_TOOL_STEPS", 8, _positive_int,
            "Most model steps in one answer with server-side tools (the first request, and "
            "one more after each round of tool results); a step past it that calls tools "
            "ends the answer with `error` `tool_steps_exceeded`, its calls not run."),
    Setting("RILL_LOGIN_URL", "", str,
            "Where the chat page sends a visitor no one signed in (a URL or an endpoint "
            "name, with `next`); empty: Flask-Login's `login_view`, if the host has one."),
)

DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS}


class ConfigError(ValueError):
    """An environment variable holds a value Rill cannot use; the message names it."""


def from_env(config: MutableMapping[str, Any], environ: Mapping[str, str] = os.environ) -> None:
    """Copy every ``RILL_*`` setting present in ``environ`` into ``config``, parsed.

    Raises :class:`ConfigError` naming the variable when a value does not parse.
    """
    for setting in SETTINGS:
        raw = environ.get(setting.name)
        if raw is None:
            continue
        try:
            config[setting.name] = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{setting.name}={raw!r} is not valid: {exc}") from None
