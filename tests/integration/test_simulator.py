"""The upstream simulator as a real process over real HTTP: framing, shapes, faults, records."""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
import requests

from rill.simulator import BIG_EVENT_BYTES, SimulatorProcess, expected_text, slow_post
from tests.integration.conftest import sim_model

pytestmark = pytest.mark.integration

REASONING = "".join(f"think{i} " for i in range(5))


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess() as process:
        yield process


def chat(sim: SimulatorProcess, model: str, *, stream: bool = True,
         session: Any = requests, **body: Any) -> requests.Response:
    payload = {"model": model, "stream": stream,
               "messages": [{"role": "user", "content": "Say hi"}], **body}
    return session.post(f"{sim.base_url}/chat/completions", json=payload, stream=True,
                        timeout=10)


def read_stream(sim: SimulatorProcess, model: str, **body: Any) -> bytes:
    with chat(sim, model, **body) as response:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        return b"".join(response.iter_content(chunk_size=None))


@dataclass
class Sse:
    """A parsed SSE body (WHATWG): each event's data (lines joined by "\\n"), comments."""

    data: list[str] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)

    @property
    def chunks(self) -> list[dict[str, Any]]:
        """The data that parse as JSON objects (no ``[DONE]``, nothing malformed)."""
        out = []
        for data in self.data:
            try:
                out.append(json.loads(data))
            except json.JSONDecodeError:
                continue
        return [c for c in out if isinstance(c, dict)]

    def text(self, *keys: str) -> str:
        """The concatenated ``delta[key]`` of every choice that has a delta."""
        keys = keys or ("content",)
        return "".join(choice["delta"].get(key) or "" for chunk in self.chunks
                       for choice in chunk.get("choices", []) if "delta" in choice
                       for key in keys)

    @property
    def finish_reasons(self) -> list[str]:
        return [choice["finish_reason"] for chunk in self.chunks
                for choice in chunk.get("choices", []) if choice.get("finish_reason")]


def parse_sse(raw: bytes) -> Sse:
    sse, lines = Sse(), list[str]()
    for line in re.split(r"\r\n|\r|\n", raw.decode()):
        if line == "":
            if lines:
                sse.data.append("\n".join(lines))
            lines = []
        elif line.startswith(":"):
            sse.comments.append(line[1:].strip())
        elif line.startswith("data:"):
            lines.append(line[5:].removeprefix(" "))
    return sse


class RawClient:
    """A hand-held HTTP/1.1 connection, to see the bytes and to hang up at a chosen moment."""

    def __init__(self, sim: SimulatorProcess) -> None:
        address = urlsplit(sim.url)
        self.sock = socket.create_connection((address.hostname, address.port), timeout=10)
        self.received = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def post_chat(self, model: str, stream: bool = True) -> None:
        body = json.dumps({"model": model, "stream": stream, "messages": []}).encode()
        self.sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\n"
                          b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(body), body))

    def read_until(self, done: Callable[[bytes], bool]) -> bytes:
        while not done(self.received):
            data = self.sock.recv(65536)
            assert data, f"connection closed; received {self.received!r}"
            self.received += data
        return self.received


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def test_default_stream_is_byte_exact_openai_framing(sim) -> None:
    model, _ = sim_model(tokens=3)
    raw = read_stream(sim, model)
    first = json.loads(parse_sse(raw).data[0])

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse_event({"id": first["id"], "object": "chat.completion.chunk",
                          "created": first["created"], "model": "sim",
                          "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    assert first["id"].startswith("chatcmpl-")
    assert raw == b"".join([
        chunk({"role": "assistant", "content": ""}),
        *(chunk({"content": f"tok{i} "}) for i in range(3)),
        chunk({}, "stop"), b"data: [DONE]\n\n"])


def test_default_stream_reassembles_to_the_expected_text(sim) -> None:
    sse = parse_sse(read_stream(sim, "sim"))
    assert sse.text() == expected_text(20)
    assert sse.data[-1] == "[DONE]"
    assert sse.finish_reasons == ["stop"]
    assert all("usage" not in chunk for chunk in sse.chunks)


def test_stream_ends_with_the_zero_length_chunk_and_the_connection_stays_open(sim) -> None:
    with RawClient(sim) as client:
        for n in (2, 3):
            client.received = b""
            client.post_chat(sim_model(tokens=n)[0])
            raw = client.read_until(lambda data: data.endswith(b"0\r\n\r\n"))
            head, _, body = raw.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"Transfer-Encoding: chunked" in head
            assert body.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
            assert body.count(b"tok") == n


def test_include_usage_adds_a_usage_only_chunk_before_done(sim) -> None:
    model, _ = sim_model(tokens=4)
    sse = parse_sse(read_stream(sim, model, stream_options={"include_usage": True}))
    assert sse.data[-1] == "[DONE]"
    last = sse.chunks[-1]
    assert last["choices"] == []
    assert last["usage"]["completion_tokens"] == 4
    assert last["usage"]["total_tokens"] == (last["usage"]["prompt_tokens"] + 4)
    assert sse.text() == expected_text(4)


def test_max_tokens_caps_the_reply_with_finish_reason_length(sim) -> None:
    model, tag = sim_model(tokens=10)
    sse = parse_sse(read_stream(sim, model, max_tokens=3))
    assert sse.text() == expected_text(3)
    assert sse.finish_reasons == ["length"]
    assert sim.find(tag)["tokens_sent"] == 3


def test_text_param_streams_its_words_verbatim(sim) -> None:
    text = "<img src=x onerror=alert(1)> **bold**\n\n```py\nx = 1\n```  end"
    model, _ = sim_model(text=text)
    sse = parse_sse(read_stream(sim, model))
    assert sse.text() == text
    assert [c["choices"][0]["delta"].get("content") for c in sse.chunks[1:4]] == [
        "<img ", "src=x ", "onerror=alert(1)> "]


@pytest.mark.parametrize(
    ("shape", "text", "reasoning", "done"),
    [
        ("usage_chunk", expected_text(8), "", True),
        ("azure_filter", expected_text(8), "", True),
        ("null_content", expected_text(8), "", True),
        ("reasoning_content", expected_text(8), REASONING, True),
        ("reasoning", expected_text(8), REASONING, True),
        ("llamacpp", expected_text(8), "", True),
        ("finish_abort", expected_text(8), "", True),
        ("finish_null", expected_text(8), "", True),
        ("error_in_stream", expected_text(2), "", False),
        ("malformed", expected_text(8), "", True),
        ("no_done", expected_text(8), "", False),
        ("big_event", "x" * BIG_EVENT_BYTES + expected_text(8), "", True),
        ("multiline", expected_text(8), "", True),
        ("comments", expected_text(8), "", True),
    ],
)
def test_each_shape_delivers_the_expected_text(sim, shape, text, reasoning, done) -> None:
    model, _ = sim_model(tokens=8, shape=shape)
    sse = parse_sse(read_stream(sim, model))
    assert sse.text() == text
    assert sse.text("reasoning_content", "reasoning") == reasoning
    assert (sse.data[-1] == "[DONE]") is done


def test_shape_details_match_the_providers(sim) -> None:
    def chunks(shape: str) -> tuple[Sse, bytes]:
        raw = read_stream(sim, sim_model(tokens=3, shape=shape)[0])
        return parse_sse(raw), raw

    azure = chunks("azure_filter")[0].chunks
    assert azure[0]["choices"] == [] and "prompt_filter_results" in azure[0]
    assert any(c["choices"] and "delta" not in c["choices"][0] for c in azure)
    nulls = [c["choices"][0]["delta"] for c in chunks("null_content")[0].chunks[1:]]
    assert {"content": None} in nulls and {"content": ""} in nulls
    llama = chunks("llamacpp")[0].chunks
    assert all(c["system_fingerprint"] for c in llama)
    assert "timings" in llama[-2] and llama[-1]["choices"] == [] and llama[-1]["usage"]
    assert chunks("usage_chunk")[0].chunks[-1]["usage"]["completion_tokens"] == 3
    assert chunks("finish_abort")[0].finish_reasons == ["abort"]
    assert chunks("finish_null")[0].finish_reasons == []
    assert chunks("reasoning_content")[0].chunks[1]["choices"][0]["delta"] == {
        "reasoning_content": "think0 ", "content": None}


def test_framing_shapes_change_only_the_bytes(sim) -> None:
    raw = read_stream(sim, sim_model(tokens=3, shape="multiline")[0])
    multiline = parse_sse(raw)
    assert raw.count(b"\n") == raw.count(b"\r\n")
    assert all(data.count("\n") == 1 for data in multiline.data if data != "[DONE]")
    comments = parse_sse(read_stream(sim, sim_model(tokens=3, shape="comments")[0]))
    assert comments.comments == ["keep-alive"] * 3
    malformed = parse_sse(read_stream(sim, sim_model(tokens=3, shape="malformed")[0]))
    assert "{not json" in malformed.data
    big = parse_sse(read_stream(sim, sim_model(tokens=3, shape="big_event")[0]))
    assert big.chunks[1]["choices"][0]["delta"]["content"] == "x" * BIG_EVENT_BYTES
    error = parse_sse(read_stream(sim, sim_model(tokens=8, shape="error_in_stream")[0]))
    assert json.loads(error.data[-1])["error"]["code"] == "internal_error"


def test_odd_chunk_faults_replace_the_token_after_after(sim) -> None:
    def data(fault: str, **params: Any) -> list[str]:
        return parse_sse(read_stream(sim, sim_model(tokens=4, fault=fault, **params)[0])).data

    def delta(raw: str) -> dict[str, Any]:
        return json.loads(raw)["choices"][0]["delta"]

    cut = data("cut_json")
    assert [delta(d)["content"] for d in cut[1:3]] == ["tok0 ", "tok1 "]
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut[3])
    assert delta(cut[4])["content"] == "tok3 " and cut[-1] == "[DONE]"
    assert json.loads(data("choices_dict")[3])["choices"]["delta"] == {"content": "tok2 "}
    assert json.loads(data("choices_int")[3])["choices"] == 0
    long = data("long_line", size=300_000)[3]
    assert len("data: " + long + "\n\n") == 300_000 and set(delta(long)["content"]) == {"x"}
    usage = json.loads(data("negative_usage")[-2])
    assert (usage["choices"], usage["usage"]["completion_tokens"]) == ([], -5)


def test_tool_calls_fault_streams_a_function_call_as_openai_does(sim) -> None:
    sse = parse_sse(read_stream(sim, sim_model(tokens=5, fault="tool_calls", after=2)[0]))
    assert sse.text() == expected_text(2)
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in sse.chunks
             if c["choices"] and c["choices"][0]["delta"].get("tool_calls")]
    assert calls[0]["id"] and calls[0]["function"]["name"] == "get_weather"
    assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {
        "location": "Paris"}
    assert sse.finish_reasons == ["tool_calls"] and sse.data[-1] == "[DONE]"


def test_slow_post_sends_a_byte_at_a_time_within_its_bound(sim) -> None:
    body = json.dumps({"model": "sim?tokens=2", "stream": False}).encode()
    done = slow_post(f"{sim.base_url}/chat/completions", len(body) + 5, 0.001, body=body)
    assert (done.status, done.sent) == (200, len(body) + 5)
    assert b"tok0 tok1 " in done.response
    cut_short = slow_post(f"{sim.base_url}/chat/completions", 10_000, 0.05, body=body,
                          max_seconds=0.5)
    assert cut_short.status is None and 0 < cut_short.sent < 20
    assert cut_short.seconds < 5


@pytest.mark.parametrize("status", [401, 403, 404, 429, 500, 503])
def test_status_fault_answers_with_openais_error_body(sim, status) -> None:
    model, tag = sim_model(fault="status", status=status)
    with chat(sim, model) as response:
        assert response.status_code == status
        error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert response.headers.get("retry-after") == ("1" if status == 429 else None)
    assert sim.find(tag)["outcome"] == "fault"


@pytest.mark.parametrize("seconds", [7, 86400])
def test_retry_after_can_be_overridden(sim, seconds) -> None:
    with chat(sim, sim_model(fault="status", status=429, retry_after=seconds)[0]) as response:
        assert response.headers["retry-after"] == str(seconds)


def test_fail_first_fails_that_many_requests_per_tag_then_succeeds(sim) -> None:
    model, tag = sim_model(fault="status", status=503, fail_first=2, tokens=3)
    statuses = []
    for _ in range(3):
        with chat(sim, model) as response:
            statuses.append(response.status_code)
            body = response.content
    assert statuses == [503, 503, 200]
    assert parse_sse(body).text() == expected_text(3)
    assert [r["outcome"] for r in sim.requests(tag)] == ["fault", "fault", "completed"]


def test_cut_closes_connection_mid_body(sim) -> None:
    model, tag = sim_model(tokens=10, fault="cut", after=4)
    received = b""
    with chat(sim, model) as response, pytest.raises(requests.exceptions.ChunkedEncodingError):
        for piece in response.iter_content(chunk_size=None):
            received += piece
    assert parse_sse(received).text() == expected_text(4)
    assert b"[DONE]" not in received
    record = sim.wait_for(tag, lambda r: r["ended"] is not None)
    assert (record["outcome"], record["tokens_sent"]) == ("fault", 4)


def test_cut_is_an_incomplete_read_for_http_client(sim) -> None:
    address = urlsplit(sim.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        body = json.dumps({"model": sim_model(tokens=5, fault="cut", after=2)[0],
                           "stream": True})
        connection.request("POST", "/v1/chat/completions", body,
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        with pytest.raises(http.client.IncompleteRead) as error:
            response.read()
    finally:
        connection.close()
    assert parse_sse(error.value.partial).text() == expected_text(2)


@pytest.mark.parametrize(
    ("params", "ready"),
    [
        ({"tokens": 10, "fault": "stall", "after": 3}, lambda raw: raw.count(b"tok") == 3),
        ({"fault": "hang"}, None),
        ({"tokens": 3, "ttft_ms": 60_000}, lambda raw: b"\r\n\r\n" in raw),
        ({"tokens": 3, "itl_ms": 60_000, "stream": False}, None),
    ],
    ids=["stall", "hang", "ttft", "non_stream_generation"],
)
def test_client_close_while_silent_records_client_closed_within_a_second(
        sim, params, ready) -> None:
    model, tag = sim_model(**{k: v for k, v in params.items() if k != "stream"})
    with RawClient(sim) as client:
        client.post_chat(model, stream=params.get("stream", True))
        if ready:
            client.read_until(ready)
        sim.wait_for(tag, lambda r: r["outcome"] == "running")
        time.sleep(0.1)  # the simulator is silent now
    closed_at = time.monotonic()
    record = sim.wait_for(tag, lambda r: r["outcome"] == "client_closed", timeout=1)
    assert time.monotonic() - closed_at < 1
    assert record["ended"] is not None


def test_client_close_mid_stream_stops_sending(sim) -> None:
    model, tag = sim_model(tokens=1000, itl_ms=20)
    with RawClient(sim) as client:
        client.post_chat(model)
        client.read_until(lambda raw: raw.count(b"tok") >= 3)
    record = sim.wait_for(tag, lambda r: r["outcome"] == "client_closed", timeout=1)
    assert record["tokens_sent"] < 100


def test_non_stream_returns_a_chat_completion(sim) -> None:
    model, tag = sim_model(tokens=5)
    with chat(sim, model, stream=False, max_tokens=4) as response:
        assert response.headers["content-type"] == "application/json"
        completion = response.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"] == {"role": "assistant",
                                                   "content": expected_text(4)}
    assert completion["choices"][0]["finish_reason"] == "length"
    assert completion["usage"]["completion_tokens"] == 4
    assert sim.find(tag)["outcome"] == "completed"


def test_session_reuses_one_connection_for_sequential_streams(sim) -> None:
    tags = []
    with requests.Session() as session:
        for _ in range(2):
            model, tag = sim_model(tokens=3)
            with chat(sim, model, session=session) as response:
                assert parse_sse(response.content).text() == expected_text(3)
            tags.append(tag)
    first, second = (sim.find(tag) for tag in tags)
    assert first["conn"] == second["conn"]


def test_ttft_delays_the_first_chunk(sim) -> None:
    def first_chunk_after(ttft_ms: int) -> float:
        with chat(sim, sim_model(tokens=2, ttft_ms=ttft_ms)[0]) as response:
            started = time.monotonic()
            next(response.iter_content(chunk_size=None))
            return time.monotonic() - started

    assert first_chunk_after(0) < 0.2
    assert 0.29 < first_chunk_after(300) < 1.0


def test_itl_spaces_the_tokens(sim) -> None:
    started = time.monotonic()
    sse = parse_sse(read_stream(sim, sim_model(tokens=5, itl_ms=100)[0]))
    assert sse.text() == expected_text(5)
    assert 0.39 < time.monotonic() - started < 2.0


def test_long_stream_without_itl_arrives_whole(sim) -> None:
    model, tag = sim_model(tokens=20_000)
    assert parse_sse(read_stream(sim, model)).text() == expected_text(20_000)
    assert sim.find(tag)["tokens_sent"] == 20_000


def test_openai_sdk_streams_the_expected_text(sim) -> None:
    model, tag = sim_model(tokens=12, itl_ms=5)
    with openai.OpenAI(base_url=sim.base_url, api_key="test", max_retries=0) as client:
        stream = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], stream=True,
            stream_options={"include_usage": True})
        with stream:
            chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text(12)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 12
    record = sim.find(tag)
    assert record["headers"]["authorization"] == "Bearer test"
    assert record["outcome"] == "completed"
    assert record["body"]["stream"] is True


def test_records_describe_each_request(sim) -> None:
    model, tag = sim_model(tokens=2, itl_ms=1)
    read_stream(sim, model)
    record = sim.find(tag)
    assert record["model"] == model
    assert record["params"] == {"tokens": 2, "itl_ms": 1, "ttft_ms": 0, "tag": tag}
    assert record["headers"]["content-type"] == "application/json"
    assert record["started"] <= record["ended"]
    assert (record["outcome"], record["tokens_sent"]) == ("completed", 2)


def test_clear_forgets_the_records(sim) -> None:
    model, tag = sim_model(tokens=1)
    read_stream(sim, model)
    assert sim.find(tag) is not None
    sim.clear()
    assert sim.requests() == []


def test_models_lists_the_default_model(sim) -> None:
    with requests.get(f"{sim.base_url}/models", timeout=5) as response:
        assert [m["id"] for m in response.json()["data"]] == ["sim"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [("GET", "/v1/nothing", None, 404), ("GET", "/v1/chat/completions", None, 404),
     ("POST", "/v1/chat/completions", {"model": "sim?shape=nope"}, 400),
     ("POST", "/v1/chat/completions", {"model": "sim?tokens=many"}, 400)],
)
def test_bad_requests_get_a_json_error(sim, method, path, body, status) -> None:
    with requests.request(method, sim.url + path, json=body, timeout=5) as response:
        assert response.status_code == status
        assert set(response.json()["error"]) >= {"message", "type", "code"}


def test_simulator_exits_cleanly_on_sigterm() -> None:
    """SIGTERM right after the listening line used to kill it: handlers came after the line."""
    process = SimulatorProcess("--tokens", "2")
    process.stop()
    assert process.process.returncode == 0


def test_a_simulator_that_cannot_start_raises_with_its_stderr() -> None:
    with pytest.raises(RuntimeError, match="invalid int value"):
        SimulatorProcess("--ttft-ms", "soon")


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}}}},
         {"type": "function", "function": {"name": "get_time"}}]


def assemble(sse: Sse) -> list[list]:
    """The calls of a stream as a client joins them: by index, or by id without one."""
    calls: dict[Any, list] = {}
    for chunk in sse.chunks:
        for choice in chunk.get("choices", []):
            for fragment in (choice.get("delta") or {}).get("tool_calls") or []:
                function = fragment.get("function") or {}
                key = fragment["index"] if "index" in fragment else fragment["id"]
                call = calls.setdefault(key, [fragment.get("id"), function.get("name"), ""])
                call[2] += function.get("arguments") or ""
    return list(calls.values())


def fragments(sse: Sse) -> list[dict]:
    return [fragment for chunk in sse.chunks for choice in chunk.get("choices", [])
            for fragment in (choice.get("delta") or {}).get("tool_calls") or []]


@pytest.mark.parametrize("shape", ["openai", "vllm", "llamacpp", "litellm", "gemini",
                                   "parallel"])
def test_tools_answers_a_request_offering_tools_with_calls_in_each_servers_shape(
        sim, shape) -> None:
    from rill.simulator import tool_call_arguments

    model, tag = sim_model(tools=shape, calls=3, pre=2)
    sse = parse_sse(read_stream(sim, model, tools=TOOLS))
    assert sse.text() == expected_text(2)
    calls = assemble(sse)
    assert [(name, arguments) for _, name, arguments in calls] == [
        ("get_weather", tool_call_arguments(0)), ("get_time", tool_call_arguments(1)),
        ("get_weather", tool_call_arguments(2))]
    assert len({call_id for call_id, _, _ in calls}) == 3
    assert json.loads(tool_call_arguments(1)) == {"location": "Tokyo", "call": 1}
    assert sse.finish_reasons == ["stop" if shape == "gemini" else "tool_calls"]
    assert sse.data[-1] == "[DONE]"
    seen = fragments(sse)
    if shape == "vllm":
        assert any("id" in f and "name" not in f["function"] for f in seen[1:])  # repeated
        last = sse.chunks[-1]["choices"][0]
        assert last["finish_reason"] == "tool_calls" and last["delta"]["tool_calls"]
    if shape == "gemini":
        assert all("index" not in f for f in seen) and len(seen) == 3
    if shape == "litellm":
        assert any(f["id"] is None and f["function"]["name"] is None for f in seen)
        assert seen[-1]["function"]["arguments"] == tool_call_arguments(2)  # whole
    if shape == "parallel":
        assert [f["index"] for f in seen[:5]] == [0, 1, 2, 0, 1]
    if shape == "llamacpp":
        assert any("timings" in c for c in sse.chunks)


def test_tools_answers_text_without_tools_or_after_a_tool_result(sim) -> None:
    model, _ = sim_model(tools="openai", tokens=4)
    plain = parse_sse(read_stream(sim, model))
    assert (plain.text(), fragments(plain)) == (expected_text(4), [])
    called = parse_sse(read_stream(sim, model, tools=TOOLS))  # the same model, with tools
    assert (called.text(), len(assemble(called))) == ("", 1)
    messages = [{"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]
    after = parse_sse(read_stream(sim, model, tools=TOOLS, messages=messages))
    assert (after.text(), fragments(after)) == (expected_text(4), [])
    assert after.finish_reasons == ["stop"]


def test_an_unknown_tools_shape_is_a_400(sim) -> None:
    with chat(sim, "sim?tools=mistral", tools=TOOLS) as response:
        assert response.status_code == 400
        assert "unknown tools shape" in response.json()["error"]["message"]
