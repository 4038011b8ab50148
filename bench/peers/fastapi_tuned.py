"""The tuned Python peer: FastAPI on uvicorn, the best a Python developer would write.

Same event contract, request body, client and pool as the idiomatic peer
(``bench/peers/fastapi_app.py``: ``start``, ``delta`` ``{"content"}``, ``done``
``{"finish_reason", "usage"}``, ids from 0), with what costs CPU there taken out:

- the SDK still builds the request and maps HTTP errors to exceptions, but through
  ``client.chat.completions.with_streaming_response.create(...)``: no pydantic model per chunk;
  the raw body's bytes are split into lines here and each ``data:`` line is parsed with orjson
  (OpenAI streaming docs: one ``chat.completion.chunk`` per ``data:`` line, ``[DONE]`` last);
- the request body is validated by pydantic from its bytes (``model_validate_json``);
- SSE frames (WHATWG HTML, server-sent events) are written as bytes, every frame of one upstream
  read in one write, through a plain ``starlette.responses.StreamingResponse``: no sse-starlette,
  no task per stream;
- no heartbeat (the idiomatic peer's, every 15 s, never fires in the bench's scenarios).

A client that leaves cancels the generator (Starlette's disconnect listener); its ``finally``
closes the upstream response, so the upstream sees the request end.
Run: ``uvicorn bench.peers.fastapi_tuned:app --loop uvloop --http httptools``.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import openai
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.responses import StreamingResponse

from bench.peers.fastapi_app import ChatBody, client, completion_params

app = FastAPI()
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
USAGE = ("prompt_tokens", "completion_tokens", "total_tokens")


def frame(id_: int, event: bytes, data: object) -> bytes:
    """One SSE frame: ``id: N\\nevent: NAME\\ndata: JSON\\n\\n``."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (id_, event, orjson.dumps(data))


@app.post("/api/chat")
async def chat(request: Request) -> StreamingResponse:
    try:
        body = ChatBody.model_validate_json(await request.body())
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None  # 422, as the idiomatic peer's
    stream_id = secrets.token_urlsafe(16)
    # Closed by events()' finally, not by a with block that ends here.
    upstream = await client.chat.completions.with_streaming_response.create(
        **completion_params(body)).__aenter__()

    async def events() -> AsyncIterator[bytes]:
        n = 0
        finish_reason = usage = None
        rest = b""
        try:
            yield frame(0, b"start", {"stream_id": stream_id, "model": body.model})
            async for data in upstream.iter_bytes():
                *lines, rest = (rest + data).split(b"\n")
                out = []
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue  # blank line, comment, event: or id:
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        continue
                    chunk = orjson.loads(payload)
                    if "error" in chunk:  # as the SDK's stream: an error object ends it
                        raise openai.APIError(str(chunk["error"]), upstream.http_request,
                                              body=chunk["error"])
                    if choices := chunk.get("choices"):
                        choice = choices[0]
                        if content := (choice.get("delta") or {}).get("content"):
                            n += 1
                            out.append(frame(n, b"delta", {"content": content}))
                        finish_reason = choice.get("finish_reason") or finish_reason
                    if chunk_usage := chunk.get("usage"):
                        usage = {k: chunk_usage.get(k) for k in USAGE}
                if out:
                    yield b"".join(out)
            n += 1
            yield frame(n, b"done", {"finish_reason": finish_reason, "usage": usage})
        finally:
            await upstream.close()  # a client that left cancels us here: stop the upstream

    return StreamingResponse(events(), media_type="text/event-stream", headers=HEADERS)
