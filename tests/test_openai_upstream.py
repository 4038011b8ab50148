"""The OpenAI-compatible upstream, in-process: the SDK over an httpx2 MockTransport.

Cassettes in ``tests/cassettes/`` are streams in the shapes real providers send.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import orjson
import pytest

from rill import errors
from rill.chat_request import ChatRequest
from rill.config import DEFAULTS, ConfigError
from rill.upstreams.openai_compat import ChunkParser, OpenAIUpstream

CASSETTES = Path(__file__).parent / "cassettes"
REQUEST = ChatRequest(messages=[{"role": "user", "content": "Hi"}], model="m", max_tokens=9)
USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


def upstream(handler: Callable[[httpx2.Request], httpx2.Response], **config) -> OpenAIUpstream:
    settings = {**DEFAULTS, "RILL_UPSTREAM_MAX_RETRIES": 0, **config}
    return OpenAIUpstream(settings, transport=httpx2.MockTransport(handler))


def sse(body: bytes | Iterator[bytes], status: int = 200, **headers: str) -> httpx2.Response:
    return httpx2.Response(status, content=body,
                           headers={"content-type": "text/event-stream", **headers})


def cassette(name: str, chunk_size: int = 7) -> Iterator[bytes]:
    """Replay a cassette in small pieces, as a network would split it."""
    data = (CASSETTES / name).read_bytes()
    for i in range(0, len(data), chunk_size):
        yield data[i:i + chunk_size]


def run(up: OpenAIUpstream) -> list:
    stream = up.open(REQUEST)
    try:
        return list(stream)
    finally:
        stream.close()


def test_request_asks_for_a_stream_with_usage_and_passes_limits() -> None:
    seen = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return sse(cassette("openai.sse"))

    run(upstream(handler))
    body = orjson.loads(seen[0].content)
    assert seen[0].url.path.endswith("/chat/completions")
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[0].headers["authorization"].startswith("Bearer ")
    assert body == {"model": "m", "messages": [{"role": "user", "content": "Hi"}],
                    "stream": True, "stream_options": {"include_usage": True},
                    "max_completion_tokens": 9}  # OpenAI's own API: see below


@pytest.mark.parametrize(("base_url", "setting", "field"), [
    (None, "auto", "max_completion_tokens"),  # api.openai.com: o-series refuse max_tokens
    ("https://api.openai.com/v1", "auto", "max_completion_tokens"),
    ("http://127.0.0.1:11434/v1", "auto", "max_tokens"),  # Ollama reads only max_tokens
    ("http://127.0.0.1:11434/v1", "max_completion_tokens", "max_completion_tokens"),
    (None, "max_tokens", "max_tokens"),
])
def test_the_length_cap_goes_in_the_field_the_server_reads(monkeypatch, base_url, setting,
                                                           field) -> None:
    if base_url is None:
        monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    else:
        monkeypatch.setenv("OPENAI_BASE_URL", base_url)
    seen = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(orjson.loads(request.content))
        return sse(cassette("openai.sse"))

    run(upstream(handler, RILL_MAX_TOKENS_PARAM=setting))
    assert {"max_tokens", "max_completion_tokens"} & set(seen[0]) == {field}
    assert seen[0][field] == 9


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("openai.sse", [("delta", "Hello"), ("delta", " there"), ("delta", "!"),
                        ("done", "stop", USAGE)]),
        ("vllm_reasoning.sse", [("reasoning", "Let me think."), ("reasoning", " Yes."),
                                ("delta", "Hello"), ("delta", " there!"),
                                ("done", "stop", USAGE)]),
        ("llamacpp.sse", [("reasoning", "Let me think."), ("reasoning", " Yes."),
                          ("delta", "Hello"), ("delta", " there!"), ("done", "stop", USAGE)]),
        ("azure.sse", [("delta", "Hello"), ("delta", " there!"), ("done", "stop", None)]),
        ("vllm_abort.sse", [("delta", "Hello"), ("delta", " there!"), ("done", "abort", None)]),
    ],
)
def test_provider_stream_shapes_become_rill_events(name: str, expected: list) -> None:
    events = run(upstream(lambda _: sse(cassette(name))))
    simplified = [(kind, p["content"]) if kind != "done" else
                  (kind, p["finish_reason"], p["usage"]) for kind, p in events]
    assert simplified == expected


def test_error_object_inside_the_stream_is_an_upstream_error_without_its_text() -> None:
    stream = upstream(lambda _: sse(cassette("error_in_stream.sse"))).open(REQUEST)
    events = []
    with pytest.raises(errors.UpstreamError) as info:
        events.extend(stream)
    assert events == [("delta", {"content": "Hello"})]
    assert info.value.code == "upstream_error"
    assert "sk-secret" not in info.value.message


def test_stream_ending_without_done_is_upstream_cut() -> None:
    with pytest.raises(errors.UpstreamCut):
        run(upstream(lambda _: sse(cassette("no_done.sse"))))


def broken_body(exc: Exception) -> Iterator[bytes]:
    yield b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    raise exc


@pytest.mark.parametrize(
    ("exc", "error"),
    [(httpx2.RemoteProtocolError("peer closed"), errors.UpstreamCut),
     (httpx2.ReadError("reset"), errors.UpstreamCut),
     (httpx2.ReadTimeout("slow"), errors.UpstreamStalled)],
)
def test_transport_failure_mid_stream_is_cut_or_stalled(exc, error) -> None:
    stream = upstream(lambda _: sse(broken_body(exc))).open(REQUEST)
    events = []
    with pytest.raises(error):
        events.extend(stream)
    assert events == [("delta", {"content": "Hel"})]


@pytest.mark.parametrize(
    ("status", "error", "retry_after"),
    [(401, errors.UpstreamAuthError, None), (403, errors.UpstreamAuthError, None),
     (400, errors.UpstreamRejected, None), (404, errors.UpstreamRejected, None),
     (408, errors.UpstreamTimeout, None), (429, errors.UpstreamRateLimited, 3),
     (500, errors.UpstreamError, None), (503, errors.UpstreamError, None)],
)
def test_error_status_before_streaming_maps_to_an_upstream_error(status, error, retry_after):
    body = b'{"error": {"message": "key sk-secret is bad", "type": "x"}}'

    def handler(_: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=body, headers={"retry-after": "3"})

    with pytest.raises(error) as info:
        upstream(handler).open(REQUEST)
    assert type(info.value) is error
    assert info.value.retry_after == retry_after
    assert "sk-secret" not in info.value.message


@pytest.mark.parametrize(
    ("exc", "error"),
    [(httpx2.ConnectError("refused"), errors.UpstreamUnavailable),
     (httpx2.ConnectTimeout("slow"), errors.UpstreamTimeout),
     (httpx2.ReadTimeout("no headers"), errors.UpstreamTimeout)],
)
def test_connection_failure_before_streaming_maps_to_an_upstream_error(exc, error) -> None:
    def handler(_: httpx2.Request) -> httpx2.Response:
        raise exc

    with pytest.raises(error):
        upstream(handler).open(REQUEST)


def test_sdk_retries_before_the_first_byte_when_allowed(monkeypatch) -> None:
    calls = []

    def handler(_: httpx2.Request) -> httpx2.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx2.Response(500, content=b"{}")
        return sse(cassette("openai.sse"))

    up = upstream(handler, RILL_UPSTREAM_MAX_RETRIES=1)
    monkeypatch.setattr(up.client, "_calculate_retry_timeout", lambda *a, **k: 0.0)
    assert run(up)[-1][0] == "done"
    assert len(calls) == 2


def test_a_malformed_event_ends_the_stream_after_the_events_before_it() -> None:
    body = (b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{"cont\n\n'
            b'data: {"choices":[{"index":0,"delta":{"content":"b"}}]}\n\n'
            b"data: [DONE]\n\n")
    stream = upstream(lambda _: sse(body)).open(REQUEST)
    events = []
    with pytest.raises(errors.UpstreamMalformed) as info:
        events.extend(stream)
    assert events == [("delta", {"content": "a"})]
    assert (info.value.code, info.value.status) == ("upstream_malformed", 502)


A = b'{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}'
B = b'{"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":null}]}'


@pytest.mark.parametrize("bad", [
    b'{"choices":[{"index":0,"delta":{"content":"c"}',  # cut in half
    b"{not json", b"[1, 2]", b'"text"', b"null",
    b'{"choices":{"index":0,"delta":{"content":"c"}}}', b'{"choices":0}', b'{"choices":"c"}',
    b'{"choices":["c"]}', b'{"choices":[{"delta":{}},3]}',
    b'{"choices":[{"delta":["c"]}]}', b'{"choices":[{"delta":"c"}]}',
    b'{"choices":[{"delta":{"content":5}}]}', b'{"choices":[{"delta":{"content":{"t":1}}}]}',
    b'{"choices":[{"delta":{},"finish_reason":1}]}',
    b'{"choices":[{"delta":{},"finish_reason":["stop"]}]}',
])
def test_a_malformed_chunk_ends_the_parse_keeping_the_events_before_it(bad: bytes) -> None:
    parser = ChunkParser()
    assert parser.parse([A, bad, B, b"[DONE]"]) == [("delta", {"content": "a"})]
    assert parser.error is not None and parser.error.code == "upstream_malformed"
    assert not parser.done


@pytest.mark.parametrize("odd", [
    b'{"choices":[],"prompt_filter_results":[{"prompt_index":0}]}',  # Azure's first chunk
    b"{}", b'{"choices":null}', b'{"choices":[],"usage":null}',
    b'{"choices":[{"index":0,"finish_reason":null,"content_filter_results":{}}]}',  # Azure
    b'{"choices":[{"index":0,"delta":null}]}',
    b'{"choices":[{"index":0,"delta":{"content":null}}]}',
    b'{"choices":[{"index":0,"delta":{"content":"","tool_calls":[]}}]}',
    b'{"choices":[{"index":0,"delta":{}}],"timings":{"predicted_n":3},"system_fingerprint":"b"}',
    b'{"choices":[{"index":0,"delta":{"reasoning":{"effort":"low"},"content":null}}]}',
    b'{"choices":[],"usage":"many"}',
])
def test_shapes_providers_send_are_tolerated(odd: bytes) -> None:
    parser = ChunkParser()
    events = parser.parse([A, odd, B, b"[DONE]"])
    assert [e[1].get("content") for e in events] == ["a", "b", None]
    assert parser.error is None and parser.done


def test_usage_keeps_only_non_negative_integer_counts() -> None:
    usage = (b'{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":-5,'
             b'"total_tokens":1.5}}')
    parser = ChunkParser()
    done = parser.parse([A, usage, b"[DONE]"])[-1]
    assert done == ("done", {"finish_reason": None, "usage": {
        "prompt_tokens": 5, "completion_tokens": None, "total_tokens": None}})
    odd = b'{"choices":[],"usage":{"prompt_tokens":true,"completion_tokens":"3"}}'
    assert ChunkParser().parse([odd, b"[DONE]"])[-1][1]["usage"] == dict.fromkeys(
        ("prompt_tokens", "completion_tokens", "total_tokens"))


@pytest.mark.parametrize("call", [
    b'{"choices":[{"index":0,"delta":{"content":"b","tool_calls":[{"index":0,"id":"call_1",'
    b'"type":"function","function":{"name":"f","arguments":""}}]}}]}',
    b'{"choices":[{"index":0,"delta":{"content":"b","function_call":{"name":"f"}}}]}',
    b'{"choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"tool_calls"}]}',
])
def test_tool_calls_end_the_parse_as_unsupported_after_the_text_before(call: bytes) -> None:
    parser = ChunkParser()
    assert parser.parse([A, call, B, b"[DONE]"]) == [("delta", {"content": "a"}),
                                                     ("delta", {"content": "b"})]
    assert parser.error is not None and parser.error.code == "upstream_unsupported"
    assert "tool call" in parser.error.message


def test_an_event_over_the_limit_ends_the_stream_as_malformed_after_the_text_before() -> None:
    def body() -> Iterator[bytes]:
        yield b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\ndata: {"choices":'
        yield from [b"x" * 100] * 20  # never ended
        raise AssertionError("read past the limit")

    stream = upstream(lambda _: sse(body()), RILL_UPSTREAM_MAX_EVENT_BYTES=1000).open(REQUEST)
    events = []
    with pytest.raises(errors.UpstreamMalformed):
        events.extend(stream)
    assert events == [("delta", {"content": "a"})]


def test_openai_variables_lose_surrounding_whitespace(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", " sk-SECRET\n")  # as `echo sk-SECRET > file` leaves it
    monkeypatch.setenv("OPENAI_ORG_ID", "org-1\r\n")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1\n")
    seen = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return sse(cassette("openai.sse"))

    run(upstream(handler))
    assert seen[0].headers["authorization"] == "Bearer sk-SECRET"
    assert seen[0].headers["openai-organization"] == "org-1"
    assert str(seen[0].url) == "http://127.0.0.1:9/v1/chat/completions"


@pytest.mark.parametrize(("name", "value"), [
    ("OPENAI_API_KEY", "sk-SECRET\nX-Evil: 1"), ("OPENAI_API_KEY", "sk-SECRET\rX"),
    ("OPENAI_API_KEY", "sk-\x7fSECRET"), ("OPENAI_API_KEY", "sk-SECRET\tX"),
    ("OPENAI_API_KEY", "sk-SECRET\u00e9"), ("OPENAI_API_KEY", " \n"),
    ("OPENAI_ORG_ID", "org-SECRET\nX: 1"), ("OPENAI_PROJECT_ID", "SECRET\r\nX: 1"),
    ("OPENAI_BASE_URL", "http://SECRET/v1\r\nX: 1"),
    ("OPENAI_CUSTOM_HEADERS", "X-A: 1\nX-B: SECRET\rX: 2"),
])
def test_an_unusable_openai_variable_stops_the_start_naming_it_not_showing_it(
        monkeypatch, name, value) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        OpenAIUpstream({**DEFAULTS})
    assert name in str(info.value)
    assert "SECRET" not in str(info.value) and "X-Evil" not in str(info.value)
