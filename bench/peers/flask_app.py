"""The naive baseline: plain Flask on gunicorn ``gthread`` with the synchronous ``openai`` SDK.

One thread per stream: ``gunicorn -k gthread --threads 64 bench.peers.flask_app:app``.
Same event contract as Rill (``start``, ``delta`` ``{"content"}``, ``done``
``{"finish_reason", "usage"}``, ids from 0); a client that leaves is noticed at the next
write, and the generator's ``finally`` closes the upstream.
"""

from __future__ import annotations

import json
import os
import secrets

import openai
from flask import Flask, Response, request

app = Flask(__name__)
client = openai.OpenAI(api_key=os.environ.get("OPENAI_API_KEY") or "unused")


def _event(id_: int, event: str, data: dict) -> str:
    return f"id: {id_}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@app.post("/api/chat")
def chat() -> Response:
    body = request.get_json()
    model = body.get("model") or os.environ.get("RILL_MODEL", "sim")
    stream_id = secrets.token_urlsafe(16)
    stream = client.chat.completions.create(
        model=model, messages=body["messages"], stream=True,
        stream_options={"include_usage": True})

    def generate():
        n = 0
        finish_reason = usage = None
        try:
            yield _event(n, "start", {"stream_id": stream_id, "model": model})
            for chunk in stream:
                if chunk.choices:
                    choice = chunk.choices[0]
                    if choice.delta and choice.delta.content:
                        n += 1
                        yield _event(n, "delta", {"content": choice.delta.content})
                    finish_reason = choice.finish_reason or finish_reason
                if chunk.usage:
                    usage = {k: getattr(chunk.usage, k)
                             for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
            n += 1
            yield _event(n, "done", {"finish_reason": finish_reason, "usage": usage})
        finally:
            stream.close()

    return Response(generate(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
