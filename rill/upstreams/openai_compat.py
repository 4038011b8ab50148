"""The upstream for any OpenAI-compatible server, through the official ``openai`` SDK.

OpenAI, vLLM, Ollama, llama.cpp and LiteLLM all speak the chat completions streaming
protocol (OpenAI API reference, "Chat completions: streaming"): ``data:`` events of
``chat.completion.chunk`` JSON, ended by ``data: [DONE]``. The SDK does transport, auth,
retries and error mapping; Rill reads its raw streaming response (``with_streaming_response``)
and parses chunks with orjson, skipping the SDK's per-chunk model objects, which cost about
8x more per token.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import ssl
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any

import gevent
import httpx2
import openai
import orjson

from .. import errors, tasks
from ..chat_request import ChatRequest
from ..sse import iter_data
from . import Event

log = logging.getLogger(__name__)

DRAIN_SECONDS = 5.0
POOL_SHARD = 64  # upstream connections per httpx pool (see OpenAIUpstream)
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


class OpenAIUpstream:
    """Chat completions from ``OPENAI_BASE_URL`` (default OpenAI's) with ``OPENAI_API_KEY``."""

    demo = False

    def __init__(
        self, config: Mapping[str, Any], transport: httpx2.BaseTransport | None = None
    ) -> None:
        """``transport`` replaces the network (tests pass an ``httpx2.MockTransport``)."""
        streams = config["RILL_MAX_STREAMS"] or None
        # httpx's pool scans every connection it holds on each request and each close, so
        # one pool for 8,000 streams costs O(n²): shard it, one SDK client per shard, each
        # with room for twice its share. (The SDK's default pool of 1,000 would queue.)
        shards = 1 if transport is not None else math.ceil((streams or POOL_SHARD) / POOL_SHARD)
        per_shard = None if streams is None else math.ceil(2 * streams / shards)
        verify = httpx2.create_ssl_context()  # one for all shards: each costs ~0.8 MB
        self.clients = [_client(config, per_shard, transport, verify) for _ in range(shards)]
        self.client = self.clients[0]
        self._in_flight = [0] * shards

    def _shard(self) -> int:
        """The first shard under ``POOL_SHARD`` streams (so idle connections are reused),
        else the least busy."""
        for shard, count in enumerate(self._in_flight):
            if count < POOL_SHARD:
                return shard
        return self._in_flight.index(min(self._in_flight))

    def open(self, request: ChatRequest) -> OpenAIStream:
        """Send the request and wait for the response status (not the first token).

        Raises an :class:`~rill.errors.UpstreamError` subclass for a refused connection,
        a timeout or an error status, after the SDK's retries.
        """
        shard = self._shard()
        manager = self.clients[shard].chat.completions.with_streaming_response.create(  # type: ignore[call-overload]
            model=request.model,
            messages=request.messages,
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=openai.omit if request.max_tokens is None else request.max_tokens,
            temperature=openai.omit if request.temperature is None else request.temperature,
        )
        self._in_flight[shard] += 1
        try:
            response = _enter(manager)
        except BaseException:
            self._in_flight[shard] -= 1
            raise
        return OpenAIStream(manager, response.http_response, request.model,
                            on_close=lambda: self._closed(shard))

    def _closed(self, shard: int) -> None:
        self._in_flight[shard] -= 1


def _client(config: Mapping[str, Any], connections: int | None,
            transport: httpx2.BaseTransport | None, verify: ssl.SSLContext) -> openai.OpenAI:
    connect = config["RILL_UPSTREAM_CONNECT_TIMEOUT_SECONDS"]
    http_client = openai.DefaultHttpxClient(
        limits=httpx2.Limits(max_connections=connections,
                             max_keepalive_connections=connections, keepalive_expiry=30.0),
        timeout=httpx2.Timeout(connect=connect, pool=connect, write=30.0,
                               read=config["RILL_STALL_TIMEOUT_SECONDS"]),
        transport=transport,
        verify=verify,
    )
    return openai.OpenAI(
        # A local server (vLLM, Ollama, llama.cpp) needs no key, but the SDK wants one.
        api_key=os.environ.get("OPENAI_API_KEY") or "unused",
        max_retries=config["RILL_UPSTREAM_MAX_RETRIES"],
        http_client=http_client,
    )


def _enter(manager: AbstractContextManager[Any]) -> Any:
    """Send the request; map the SDK's failures to Rill's upstream errors."""
    try:
        return manager.__enter__()
    except openai.APIStatusError as exc:
        raise _status_error(exc) from None
    except openai.APITimeoutError:
        raise errors.UpstreamTimeout() from None
    except openai.APIConnectionError as exc:
        log.warning("upstream connection failed: %s", type(exc.__cause__).__name__)
        raise errors.UpstreamUnavailable() from None


def _status_error(exc: openai.APIStatusError) -> errors.UpstreamError:
    status = exc.status_code
    # The body goes to the log (redacted by rill.logs), never to the client.
    log.warning("upstream answered HTTP %d (request id %s): %.300s", status, exc.request_id,
                exc.message)
    if status in (401, 403):
        return errors.UpstreamAuthError()
    if status == 429:
        return errors.UpstreamRateLimited(retry_after=_retry_after(exc.response.headers))
    if status in (408, 504):
        return errors.UpstreamTimeout()
    if status < 500:
        return errors.UpstreamRejected(
            f"The model provider rejected the request (HTTP {status}).")
    return errors.UpstreamError(f"The model provider failed (HTTP {status}). Please try again.")


def _retry_after(headers: httpx2.Headers) -> int | None:
    try:
        return max(1, round(float(headers.get("retry-after", ""))))
    except ValueError:
        return None


class OpenAIStream:
    """One streaming response, read as Rill events (see :mod:`rill.upstreams`)."""

    def __init__(
        self, manager: AbstractContextManager[Any], response: httpx2.Response, model: str,
        on_close: Callable[[], None] = lambda: None,
    ) -> None:
        self.model = model
        self._manager = manager
        self._response = response
        self._on_close: Callable[[], None] | None = on_close

    def __iter__(self) -> Iterator[Event]:
        data = iter_data(self._response.iter_bytes())
        try:
            yield from _events(data)
        except httpx2.TimeoutException:
            raise errors.UpstreamStalled() from None
        except httpx2.HTTPError as exc:
            log.warning("upstream stream broke: %s", type(exc).__name__)
            raise errors.UpstreamCut() from None
        self._drain(data)

    def _drain(self, data: Iterator[bytes]) -> None:
        """Read the body past ``[DONE]`` to its end so the connection returns to the pool."""
        if not tasks.cooperative():
            # A thread cannot be timed out mid-read; the client's read timeout bounds it.
            with contextlib.suppress(httpx2.HTTPError):
                for _ in data:
                    pass
            return
        try:
            with gevent.Timeout(DRAIN_SECONDS):
                for _ in data:
                    pass
        except (gevent.Timeout, httpx2.HTTPError):
            pass

    def close(self) -> None:
        """Close the response (its connection goes back to the pool if it was read to the
        end); safe to call again."""
        self._manager.__exit__(None, None, None)
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


def _events(data: Iterator[bytes]) -> Iterator[Event]:
    """Turn chunk JSON into Rill events; end with ``done`` at ``[DONE]``.

    Handles the shapes providers send: usage-only chunks with empty ``choices``, Azure's
    content-filter chunks (no ``choices``, or a choice with no ``delta``), null or empty
    content, reasoning in ``delta.reasoning_content`` (DeepSeek, llama.cpp) or
    ``delta.reasoning`` (vLLM, OpenRouter), extra keys such as llama.cpp's ``timings``.
    A malformed event is logged and skipped. Raises :class:`~rill.errors.UpstreamError`
    for an ``{"error": ...}`` event and :class:`~rill.errors.UpstreamCut` when the body
    ends without ``[DONE]``.
    """
    finish_reason = usage = None
    for raw in data:
        if raw == b"[DONE]":
            yield "done", {"finish_reason": finish_reason, "usage": usage}
            return
        try:
            chunk = orjson.loads(raw)
        except orjson.JSONDecodeError:
            log.warning("skipped a malformed upstream event (%d bytes)", len(raw))
            continue
        if not isinstance(chunk, dict):
            continue
        if chunk.get("error"):
            log.warning("upstream sent an error event mid-stream")
            raise errors.UpstreamError(
                "The model provider reported an error mid-answer; the answer is incomplete.")
        choices = chunk.get("choices")
        if choices and isinstance(choices[0], dict):
            choice = choices[0]
            delta = choice.get("delta")
            if isinstance(delta, dict):
                reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                if reasoning and isinstance(reasoning, str):
                    yield "reasoning", {"content": reasoning}
                content = delta.get("content")
                if content and isinstance(content, str):
                    yield "delta", {"content": content}
            finish_reason = choice.get("finish_reason") or finish_reason
        if isinstance(chunk.get("usage"), dict):
            usage = {key: chunk["usage"].get(key) for key in USAGE_KEYS}
    raise errors.UpstreamCut("The model provider's stream ended before it was complete; "
                             "the answer is incomplete.")
