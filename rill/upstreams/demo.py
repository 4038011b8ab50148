"""The demo upstream: offline, deterministic, paced like a real model.

Used when no OpenAI-compatible server is configured, so the first run works on any
machine. Replies are canned Markdown, chosen by the last user message, streamed a word at a
time after ``RILL_DEMO_TTFT_MS`` at ``RILL_DEMO_TOKENS_PER_SECOND``. The model is named
``rill-demo`` so the page and the ``start`` event say it is a demo.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import gevent

from ..chat_request import ChatRequest
from . import Event

MODEL = "rill-demo"

REPLIES = (
    "## Hello from Rill's demo\n\n"
    "This answer comes from Rill's **built-in demo**, not a language model. It streams "
    "word by word over *Server-Sent Events*, the way a real model's answer would.\n\n"
    "To talk to a real model, start Rill with one of:\n\n"
    "- `OPENAI_API_KEY=sk-…` for OpenAI\n"
    "- `OPENAI_BASE_URL=http://127.0.0.1:8000/v1` for vLLM\n"
    "- `OPENAI_BASE_URL=http://127.0.0.1:11434/v1` for Ollama\n",
    "Here is a small Python example that reads a Rill stream:\n\n"
    "```python\nimport requests\n\n"
    "with requests.post(\"http://127.0.0.1:8000/api/chat\", stream=True,\n"
    "                   json={\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}]}) as r:\n"
    "    for line in r.iter_lines(decode_unicode=True):\n"
    "        print(line)\n```\n\n"
    "Each `delta` event carries one or more tokens; `done` ends the answer.\n",
    "| Event | Data |\n|---|---|\n"
    "| `start` | stream id and model |\n"
    "| `delta` | answer text |\n"
    "| `reasoning` | a model's thinking |\n"
    "| `done` | finish reason and token usage |\n"
    "| `error` | a code and a message |\n\n"
    "A `: ping` comment keeps the connection open while a model thinks.\n",
)

_TOKEN = re.compile(r"\S+\s*|\s+")


def reply_for(messages: list[dict[str, Any]]) -> str:
    """Pick the canned reply for a conversation: stable for the same last user message."""
    last = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    return REPLIES[zlib.crc32(last.encode("utf-8")) % len(REPLIES)]


class DemoUpstream:
    demo = True

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.ttft = config["RILL_DEMO_TTFT_MS"] / 1000
        self.itl = 1 / max(config["RILL_DEMO_TOKENS_PER_SECOND"], 0.001)

    def open(self, request: ChatRequest) -> DemoStream:
        return DemoStream(reply_for(request.messages), request, self.ttft, self.itl)


class DemoStream:
    def __init__(self, text: str, request: ChatRequest, ttft: float, itl: float) -> None:
        self.model = MODEL
        self.tokens = _TOKEN.findall(text)
        self.prompt_tokens = sum(len((m["content"] or "").split()) for m in request.messages)
        self.max_tokens = request.max_tokens
        self.ttft, self.itl = ttft, itl

    def __iter__(self) -> Iterator[Event]:
        tokens = self.tokens[: self.max_tokens] if self.max_tokens else self.tokens
        gevent.sleep(self.ttft)
        for i, token in enumerate(tokens):
            if i:
                gevent.sleep(self.itl)
            yield "delta", {"content": token}
        usage = {"prompt_tokens": self.prompt_tokens, "completion_tokens": len(tokens),
                 "total_tokens": self.prompt_tokens + len(tokens)}
        finish = "length" if len(tokens) < len(self.tokens) else "stop"
        yield "done", {"finish_reason": finish, "usage": usage}

    def close(self) -> None:
        pass
