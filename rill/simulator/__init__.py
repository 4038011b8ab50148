"""An OpenAI-compatible upstream simulator, for tests, benchmarks and trying Rill keyless.

``POST /v1/chat/completions`` streams (or returns) chat completions as OpenAI's chat
completions API does, and replays the shapes other providers send. Each request picks its
scenario in the model name, as a query string, so concurrent callers never interfere::

    sim?tokens=50&ttft_ms=300&itl_ms=20&fault=cut&after=5&shape=reasoning&tag=abc

Parameters: ``tokens`` (reply length; the text is :func:`expected_text`), ``text`` (reply
words instead), ``ttft_ms``, ``itl_ms``, ``reasoning_tokens``, ``tag`` (to find the record),
``after`` (content tokens before a fault acts; default 2), and:

- ``fault``: ``status`` (answer ``status``, default 500, with OpenAI's error body;
  ``retry_after`` sets ``Retry-After``, default 1 on a 429; ``fail_first=N`` fails only the
  first N requests of a ``tag``; ``status=429&retry_after=86400`` is a long
  ``Retry-After``), ``cut`` (close mid-body), ``stall`` (go silent), ``hang`` (silent before
  the head); and upstreams that send odd things, each in place of the next token's chunk,
  the stream then going on as usual: ``cut_json`` (that chunk's JSON cut in half),
  ``choices_dict`` / ``choices_int`` (its ``choices`` a dict / the int 0), ``long_line``
  (a content chunk of ``size`` bytes, default ``LONG_LINE_BYTES``, its line ended only
  after all of them); ``tool_calls`` (then a function call streamed in
  ``delta.tool_calls`` fragments, ``finish_reason`` ``tool_calls``, ``[DONE]``);
  ``negative_usage`` (a usage chunk, asked for or not, with ``completion_tokens`` -5).
- ``shape`` (comma-separated): ``usage_chunk``, ``azure_filter``, ``null_content``,
  ``reasoning_content``, ``reasoning``, ``llamacpp``, ``finish_abort``, ``finish_null``,
  ``error_in_stream``, ``malformed``, ``no_done``, ``big_event`` (a
  ``BIG_EVENT_BYTES`` content chunk), ``multiline`` (data split over lines, CRLF),
  ``comments``.
- ``tools`` (``openai``, ``vllm``, ``llamacpp``, ``litellm``, ``gemini``, ``parallel``): a
  request that offers ``tools`` is answered with ``calls`` (default 1) tool calls streamed in
  that server's shape, after ``pre`` content tokens (default 0); one whose last message is a
  ``tool`` result, or without ``tools``, is answered with text (:mod:`.tool_replies`).

``GET /_sim/requests[?tag=…]`` lists the chat requests with their outcome (``running``,
``completed``, ``client_closed``, ``fault``); ``DELETE`` clears them. Every stream watches
its client socket, so a client that leaves is seen even while the simulator is silent.

A gevent ``StreamServer`` with its own small HTTP/1.1 layer (:mod:`.server`, :mod:`.wire`;
keep-alive, chunked bodies) gives exact control over cuts and stalls and holds thousands of
streams; :mod:`.plan` reads the parameters and :mod:`.scenarios` writes the replies (tool calls in
:mod:`.tool_replies`). Run it
with ``rill-simulator`` or ``python -m rill.simulator``; tests use :class:`SimulatorProcess`
and :func:`slow_post` (a client that sends its body a byte at a time) from :mod:`.process`.
"""

from __future__ import annotations

from .plan import (
    BIG_EVENT_BYTES,
    DEFAULT_MODEL,
    FAULTS,
    LONG_LINE_BYTES,
    SHAPES,
    expected_text,
    parse_params,
)
from .process import SimulatorProcess, SlowPost, slow_post
from .server import MAX_BODY_BYTES, MAX_RECORDS, Simulator, main
from .tool_replies import SHAPES as TOOL_SHAPES
from .tool_replies import tool_call_arguments

__all__ = ["BIG_EVENT_BYTES", "DEFAULT_MODEL", "FAULTS", "LONG_LINE_BYTES", "MAX_BODY_BYTES",
           "MAX_RECORDS", "SHAPES", "TOOL_SHAPES", "Simulator", "SimulatorProcess", "SlowPost",
           "expected_text", "main", "parse_params", "slow_post", "tool_call_arguments"]
