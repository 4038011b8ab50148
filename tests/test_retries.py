"""Rill's retries before the first byte (rill.upstreams.retries): the SDK's rules, a bound on
the waits."""

from __future__ import annotations

import email.utils
import time

import httpx2
import openai
import pytest

from rill.upstreams import retries

REQUEST = httpx2.Request("POST", "http://upstream/v1/chat/completions")


def status_error(status: int, **headers: str) -> openai.APIStatusError:
    response = httpx2.Response(status, headers=headers, request=REQUEST)
    return openai.APIStatusError("failed", response=response, body=None)


@pytest.mark.parametrize(("error", "wait"), [
    (status_error(429, **{"retry-after": "3"}), 3.0),
    (status_error(503, **{"retry-after-ms": "250"}), 0.25),
    (status_error(400), None),
    (status_error(404, **{"x-should-retry": "true", "retry-after": "1"}), 1.0),
    (status_error(500, **{"x-should-retry": "false"}), None),
])
def test_what_is_retried_and_after_how_long(error, wait) -> None:
    assert retries.wait_before_retry(error, 0) == wait


def test_backoff_doubles_with_jitter_when_the_upstream_names_no_wait() -> None:
    error = openai.APIConnectionError(request=REQUEST)
    assert 0.375 <= retries.wait_before_retry(error, 0) <= 0.5
    assert 6.0 <= retries.wait_before_retry(error, 10) <= 8.0


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retries.retry_after(httpx2.Headers({"retry-after": when})) <= 30


def test_a_wait_past_the_budget_is_not_made() -> None:
    calls = []

    def send() -> None:
        calls.append(1)
        raise status_error(429, **{"retry-after": "59"})

    started = time.monotonic()
    with pytest.raises(openai.APIStatusError):
        retries.call(send, retries=2, most_wait=10)
    assert calls == [1] and time.monotonic() - started < 1


def test_retries_until_one_works_within_the_budget() -> None:
    outcomes = [status_error(503, **{"retry-after-ms": "10"}), "ok"]

    def send() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert retries.call(send, retries=2, most_wait=1) == "ok"
