"""The idiomatic Python peer: FastAPI + sse-starlette + ``openai.AsyncOpenAI``, on uvicorn.

Written as the FastAPI and sse-starlette docs and the OpenAI SDK README show it: iterate the
SDK's parsed chunks, yield one event per delta. Same event contract as Rill (``start``,
``delta`` ``{"content"}``, ``done`` ``{"finish_reason", "usage"}``, ids from 0), same
settings where they exist: a heartbeat every 15 s, the SDK's pool raised so it never queues.
Run: ``uvicorn bench.peers.fastapi_app:app --loop uvloop --http httptools``.
"""

from __future__ import annotations

import json
import os
import secrets

import httpx2
import openai
from fastapi import FastAPI, Request
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

POOL = int(os.environ.get("PEER_MAX_CONNECTIONS", "10000"))

app = FastAPI()
client = openai.AsyncOpenAI(
    api_key=os.environ.get("OPENAI_API_KEY") or "unused",
    http_client=openai.DefaultAsyncHttpxClient(
        limits=httpx2.Limits(max_connections=POOL, max_keepalive_connections=POOL)),
)


class Message(BaseModel):
    role: str
    content: str


class ChatBody(BaseModel):
    messages: list[Message]
    model: str = os.environ.get("RILL_MODEL", "sim")
    max_tokens: int | None = None
    temperature: float | None = None


def completion_params(body: ChatBody) -> dict:
    """The SDK's ``create`` arguments for ``body``: a stream, with usage at its end."""
    return {
        "model": body.model,
        "messages": [m.model_dump() for m in body.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": body.max_tokens if body.max_tokens is not None else openai.omit,
        "temperature": body.temperature if body.temperature is not None else openai.omit,
    }


def _event(id_: int, event: str, data: dict) -> ServerSentEvent:
    return ServerSentEvent(data=json.dumps(data, separators=(",", ":")), event=event,
                           id=str(id_))


@app.post("/api/chat")
async def chat(body: ChatBody, request: Request) -> EventSourceResponse:
    stream_id = secrets.token_urlsafe(16)
    stream = await client.chat.completions.create(**completion_params(body))

    async def events():
        n = 0
        finish_reason = usage = None
        try:
            yield _event(n, "start", {"stream_id": stream_id, "model": body.model})
            async for chunk in stream:
                if chunk.choices:
                    choice = chunk.choices[0]
                    if choice.delta and choice.delta.content:
                        n += 1
                        yield _event(n, "delta", {"content": choice.delta.content})
                    finish_reason = choice.finish_reason or finish_reason
                if chunk.usage:
                    usage = chunk.usage.model_dump(
                        include={"prompt_tokens", "completion_tokens", "total_tokens"})
            n += 1
            yield _event(n, "done", {"finish_reason": finish_reason, "usage": usage})
        finally:
            await stream.close()  # a client that left cancels us here: stop the upstream

    return EventSourceResponse(events(), ping=15)
