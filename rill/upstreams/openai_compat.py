"""The upstream for any OpenAI-compatible server, through the official ``openai`` SDK.

OpenAI, vLLM, Ollama, llama.cpp and LiteLLM all speak the chat completions streaming
protocol (OpenAI API reference, "Chat completions: streaming"): ``data:`` events of
``chat.completion.chunk`` JSON, ended by ``data: [DONE]``. The SDK builds the request,
authenticates, retries and maps errors, through its generic ``post`` with a body Rill built;
under it, Rill's :mod:`~rill.upstreams.transport` carries the request and leaves the body on
the socket. Rill parses the body itself (orjson), a read at a time, skipping the SDK's
per-chunk model objects, which cost about 8x more per token; under gevent the producer reads
it without waiting (:meth:`OpenAIStream.read_nowait`) when the socket is readable.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from typing import Any

import gevent
import httpx2
import openai
import orjson
from openai._constants import RAW_RESPONSE_HEADER

from .. import errors, tasks
from ..chat_request import ChatRequest
from ..sse import MAX_EVENT_BYTES, DataDecoder
from . import DRAIN_SECONDS, Event
from . import retries as retrying
from .chunks import ChunkParser
from .sdk_settings import max_tokens_param, sdk_settings
from .transport import BODY_EXTENSION, Body, UpstreamTransport, proxy_mounts

log = logging.getLogger(__name__)

__all__ = ["ChunkParser", "OpenAIStream", "OpenAIUpstream"]


class OpenAIUpstream:
    """Chat completions from ``OPENAI_BASE_URL`` (default OpenAI's) with ``OPENAI_API_KEY``.

    Raises :class:`~rill.config.ConfigError` for an unusable ``OPENAI_*`` variable (see
    :func:`sdk_settings`).
    """

    demo = False

    def __init__(
        self, config: Mapping[str, Any], transport: httpx2.BaseTransport | None = None
    ) -> None:
        """``transport`` replaces the network (tests pass an ``httpx2.MockTransport``);
        by default it is Rill's :class:`~rill.upstreams.transport.UpstreamTransport`."""
        connect = config["RILL_UPSTREAM_CONNECT_TIMEOUT_SECONDS"]
        verify = httpx2.create_ssl_context()
        http_client = openai.DefaultHttpxClient(
            timeout=httpx2.Timeout(connect=connect, pool=connect, write=30.0,
                                   read=config["RILL_STALL_TIMEOUT_SECONDS"]),
            # Under gevent the producer's supervisor ends a stalled stream (and kills its
            # reader), so body reads need no timer of their own.
            transport=transport or UpstreamTransport(verify,
                                                     body_timeout=not tasks.cooperative()),
            # HTTP(S)_PROXY, ALL_PROXY, NO_PROXY: a client given a transport ignores them.
            mounts=None if transport else proxy_mounts(verify),
            verify=verify,
        )
        self.max_event_bytes = config["RILL_UPSTREAM_MAX_EVENT_BYTES"]
        settings = sdk_settings(os.environ)
        self.client = openai.OpenAI(
            # A local server (vLLM, Ollama, llama.cpp) needs no key, but the SDK wants one.
            api_key=settings.get("api_key") or "unused",
            organization=settings.get("organization"),
            project=settings.get("project"),
            base_url=settings.get("base_url"),  # None: the SDK's default
            max_retries=0,  # Rill retries, with a bound on the wait (rill.upstreams.retries)
            http_client=http_client,
        )
        self.max_tokens_param = max_tokens_param(config["RILL_MAX_TOKENS_PARAM"],
                                                 str(self.client.base_url))
        self.retries = config["RILL_UPSTREAM_MAX_RETRIES"]
        self.retry_wait = config["RILL_UPSTREAM_RETRY_WAIT_SECONDS"]

    def open(self, request: ChatRequest) -> OpenAIStream:
        """Send the request and wait for the response status (not the first token).

        Raises an :class:`~rill.errors.UpstreamError` subclass for a refused connection,
        a timeout or an error status, after the SDK's retries.
        """
        body: dict[str, Any] = {"model": request.model, "messages": request.messages,
                                "stream": True, "stream_options": {"include_usage": True}}
        if request.max_tokens is not None:
            body[self.max_tokens_param] = request.max_tokens
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.tools is not None:
            body["tools"] = request.tools
        if request.tool_choice is not None:
            body["tool_choice"] = request.tool_choice
        response = _send(self.client, orjson.dumps(body), self.retries, self.retry_wait)
        return OpenAIStream(response, request.model, self.max_event_bytes,
                            tools=request.tools is not None, first_call=request.first_call)


def _send(client: openai.OpenAI, body: bytes, retries: int = 0,
          retry_wait: float = 0.0) -> httpx2.Response:
    """POST ``body`` (JSON) to ``/chat/completions``; return the response, body unread.

    Retried up to ``retries`` times while the waits total at most ``retry_wait`` seconds
    (:mod:`rill.upstreams.retries`).

    The SDK's generic ``post`` (its documented way to make custom requests) keeps its
    transport, headers, auth, retries and error mapping, and skips what
    ``chat.completions.create`` adds per call: validating and transforming the
    parameters against their types (about 250 µs a stream here), since Rill sends a body it
    built from validated input. ``RAW_RESPONSE_HEADER: stream`` is what the SDK's own
    ``with_streaming_response`` sets so that the body is left on the socket.
    """
    try:
        return retrying.call(lambda: client.post(
            "/chat/completions", cast_to=httpx2.Response, content=body,
            options={"headers": {RAW_RESPONSE_HEADER: "stream"}}, stream=True),
            retries, retry_wait)
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
    seconds = retrying.retry_after(headers)
    return None if seconds is None else max(1, math.ceil(seconds))


class OpenAIStream:
    """One streaming response, read as Rill events (see :mod:`rill.upstreams`)."""

    def __init__(self, response: httpx2.Response, model: str,
                 max_event_bytes: int = MAX_EVENT_BYTES, tools: bool = False,
                 first_call: int = 0) -> None:
        """``max_event_bytes``: the longest line or event the body may hold
        (``RILL_UPSTREAM_MAX_EVENT_BYTES``); a longer one ends it as malformed. ``tools``:
        the request offered tools, so the upstream's tool calls are relayed, numbered from
        ``first_call``."""
        self.model = model
        self._response = response
        self._body: Body | None = response.extensions.get(BODY_EXTENSION)
        if response.headers.get("content-encoding", "identity") != "identity":
            self._body = None  # httpx2 decodes it: only iteration gives the text
        self._decoder = DataDecoder(max_event_bytes)
        self._parser = ChunkParser(tools, first_call)
        self._ended = False  # done or an error was returned: later reads only drain
        self._broken = False  # the body failed (a reset, or closed before its end)

    def fileno(self) -> int | None:
        """The socket to wait on before :meth:`read_nowait`; ``None`` if this response can
        only be iterated (another transport, or a compressed body)."""
        return None if self._body is None else self._body.fileno()

    @property
    def body_ended(self) -> bool:
        """True once nothing more can come from the body: read to its end (the connection
        can then be reused), or broken."""
        return self._broken or (self._body is not None and self._body.complete)

    def read_nowait(self) -> list[Event] | None:
        """The events that have arrived, without waiting; ``None`` if nothing has.

        Only once :meth:`fileno` is readable. Never raises: an upstream failure is the last
        event, ``("error", {...})``, as is the end of the body without ``[DONE]``. After
        ``done`` or an error, further calls read the rest of the body and return ``[]``.
        """
        assert self._body is not None
        try:
            data = self._body.read_nowait()
        except httpx2.HTTPError as exc:
            self._broken = True
            if self._ended:
                return []
            self._ended = True
            log.warning("upstream stream broke: %s", type(exc).__name__)
            return [("error", errors.UpstreamCut().to_dict())]
        if data is None:
            return None
        if self._ended:
            return []
        parser = self._parser
        events = self._parse(data) if data else []
        if not parser.done and not parser.error and self._body.complete:
            events += self._parse(None)
        if parser.error:
            events.append(("error", parser.error.to_dict()))
            # A stream that broke the format is not read on for the connection's reuse.
            self._broken = isinstance(parser.error, errors.UpstreamMalformed)
        self._ended = parser.done or parser.error is not None
        return events

    def __iter__(self) -> Iterator[Event]:
        for batch in self.batches():
            yield from batch

    def batches(self) -> Iterator[list[Event]]:
        """Yield the events of each read of the body: several when they arrived together.

        Ends after ``done`` (the body is then drained so the connection can be reused).
        Raises :class:`~rill.errors.UpstreamStalled` for a read timeout,
        :class:`~rill.errors.UpstreamCut` for a broken or unfinished body, and
        :class:`~rill.errors.UpstreamError` for an ``{"error": ...}`` event, after the
        batch of events before it.
        """
        chunks = self._response.iter_bytes()
        parser = self._parser
        try:
            for chunk in chunks:
                if batch := self._parse(chunk):
                    yield batch
                if parser.error:
                    raise parser.error
                if parser.done:
                    break
            else:
                if batch := self._parse(None):
                    yield batch
                if parser.error:
                    raise parser.error
        except httpx2.TimeoutException:
            raise errors.UpstreamStalled() from None
        except httpx2.HTTPError as exc:
            log.warning("upstream stream broke: %s", type(exc).__name__)
            raise errors.UpstreamCut() from None
        self._drain(chunks)

    def _parse(self, chunk: bytes | None) -> list[Event]:
        """The events of the next body bytes, or of the body's end (``None``), where a body
        that ended before ``[DONE]`` sets the parser's ``error`` to ``UpstreamCut``, and a
        line or event over the limit to ``UpstreamMalformed``."""
        parser, decoder = self._parser, self._decoder
        data = decoder.end() if chunk is None else decoder.feed(chunk)
        events = parser.parse(data)
        if decoder.overflow and not parser.done and not parser.error:
            parser.refuse(f"a line or event over {decoder.max_bytes} bytes")
        elif chunk is None and not parser.done and not parser.error:
            parser.error = errors.UpstreamCut("The model provider's stream ended before it "
                                              "was complete; the answer is incomplete.")
        return events

    def _drain(self, data: Iterator[Any]) -> None:
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
        self._response.close()
