"""Retries before the first byte, with a bound on the time spent waiting between them.

The ``openai`` SDK retries by itself and honours the upstream's ``Retry-After`` up to two
minutes between attempts (``openai/_base_client.py``: ``_calculate_retry_timeout``, capped by
``MAX_RETRY_AFTER_DELAY``): a client of Rill then got no byte for a minute, and a client that
left meanwhile was retried for anyway. The SDK's supported setting is ``max_retries``; its
wait has no public hook. So Rill builds the client with ``max_retries=0`` and retries here,
by the SDK's documented rules (README, "Retries": connection errors and timeouts, 408, 409,
429 and 5xx; an ``x-should-retry`` header decides first) and its backoff (0.5 s, doubling,
at most 8 s, less up to a quarter of jitter), or the upstream's ``retry-after-ms`` /
``Retry-After`` when it gives one. A retry is made only while all the waiting stays within
``RILL_UPSTREAM_RETRY_WAIT_SECONDS``; otherwise the error goes to the client at once, with
the upstream's ``Retry-After``. The waits are cooperative, so a client that leaves stops
them (:func:`rill.relay.unless_client_leaves`).
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from typing import TypeVar

import httpx2
import openai

from .. import tasks

T = TypeVar("T")
INITIAL_DELAY, MAX_DELAY = 0.5, 8.0  # seconds, as the SDK's backoff


def call(send: Callable[[], T], retries: int, most_wait: float) -> T:
    """Return ``send()``, calling it again (at most ``retries`` more times) after a
    retryable ``openai`` error while the total wait stays within ``most_wait`` seconds.

    Raises the last ``openai.APIStatusError`` / ``openai.APIConnectionError``.
    """
    waited = 0.0
    attempt = 0
    while True:
        try:
            return send()
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            wait = wait_before_retry(exc, attempt)
            if attempt >= retries or wait is None or waited + wait > most_wait:
                raise
        waited += wait
        attempt += 1
        tasks.sleep(wait)


def wait_before_retry(exc: openai.APIError, attempt: int) -> float | None:
    """Seconds to wait before retrying after ``exc`` (``attempt`` counts from 0), or
    ``None`` if it must not be retried."""
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        should = headers.get("x-should-retry")
        status = exc.status_code
        if should == "false" or (should != "true" and status not in (408, 409, 429)
                                 and status < 500):
            return None
        given = retry_after(headers)
        if given is not None and given > 0:
            return given
    delay = min(INITIAL_DELAY * 2.0 ** attempt, MAX_DELAY)
    return delay * (1 - 0.25 * random.random())  # jitter, not a secret


def retry_after(headers: httpx2.Headers) -> float | None:
    """The wait an upstream asks for, in seconds: ``retry-after-ms``, else ``Retry-After``
    (seconds or an HTTP date; RFC 9110, section 10.2.3); ``None`` if neither parses."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            return max(0.0, float(headers.get(name, "")) * scale)
        except ValueError:
            pass
    try:
        when = email.utils.parsedate_to_datetime(headers.get("retry-after", ""))
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
