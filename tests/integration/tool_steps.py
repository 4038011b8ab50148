"""An answer with tool steps for the chat page's tests: the events Rill streams for it (README,
"The API": ``delta``, ``tool_call``, ``tool_result``, ``done``), served to the page by
Playwright's ``page.route`` in place of ``POST /api/chat`` and its resume, and what the page
must show for it.

The scenario is data (:data:`SCENARIO`), the serving is :func:`route_chat`, and the checks
(:func:`shown_answer`, :data:`EXPECTED`) read only the page: an end-to-end test with real
server tools can send its question to Rill instead of routing it and check the same way."""

from __future__ import annotations

import json
from typing import Any

# A tool result that must stay text: an image with a handler, and a script.
HOSTILE = ('Note: <img src=x onerror="window.__pwned=1"> '
           '<script>window.__pwned=2</script> not found')

# The answer, in the order the model and the tools make it. ("text", s) is answer text;
# ("call", index, id, name, arguments) a tool_call fragment (id and name None after a call's
# first event); ("result", id, name, ok, content, elapsed_ms) a tool_result. Two calls
# interleave their fragments by index in step 1; step 2 has one call.
SCENARIO: list[tuple[Any, ...]] = [
    ("text", "Let me **look** that up.\n\n"),
    ("text", "- first"),
    ("call", 0, "call_a", "lookup_order", '{"order_'),
    ("call", 1, "call_b", "read_note", '{"no'),
    ("call", 0, None, None, 'id": 1042}'),
    ("call", 1, None, None, 'te": "n<1>"}'),
    ("result", "call_a", "lookup_order", True, '{"order_id": 1042, "status": "shipped"}', 412.3),
    ("result", "call_b", "read_note", False, HOSTILE, 1234),
    ("text", "Order 1042 has *shipped*. "),
    ("text", "The note is missing."),
    ("call", 0, "call_c", "lookup_order", "not json {"),
    ("result", "call_c", "lookup_order", True, "x" * 3000, 37),
    ("text", "## Done\n\n`all` set."),
]

# What the page shows for SCENARIO: the answer's parts in order, ("text", its inner text) or
# ("step", its summary); and each step's arguments and result when expanded.
EXPECTED: list[tuple[str, str]] = [
    ("text", "Let me look that up.\n\nfirst"),
    ("step", "🔧 lookup_order · 0.4 s · ok"),
    ("step", "🔧 read_note · 1.2 s · failed"),
    ("text", "Order 1042 has shipped. The note is missing."),
    ("step", "🔧 lookup_order · 37 ms · ok"),
    ("text", "Done\n\nall set."),
]
EXPECTED_DETAILS: list[tuple[str, str]] = [
    ('{\n  "order_id": 1042\n}', '{\n  "order_id": 1042,\n  "status": "shipped"\n}'),
    ('{\n  "note": "n<1>"\n}', HOSTILE),
    ("not json {", "x" * 3000),
]


def events(scenario: list[tuple[Any, ...]] = SCENARIO, stream_id: str = "tools-1",
           model: str = "sim") -> list[tuple[str, dict]]:
    """The stream's events for a scenario: [(event, data)], ``start`` first, ``done`` last."""
    out: list[tuple[str, dict]] = [("start", {"stream_id": stream_id, "model": model})]
    for kind, *rest in scenario:
        if kind == "text":
            out.append(("delta", {"content": rest[0]}))
        elif kind == "call":
            index, call_id, name, arguments = rest
            out.append(("tool_call", {"index": index, "id": call_id, "name": name,
                                      "arguments": arguments}))
        else:
            call_id, name, ok, content, elapsed_ms = rest
            out.append(("tool_result", {"id": call_id, "name": name, "ok": ok,
                                        "content": content, "elapsed_ms": elapsed_ms}))
    out.append(("done", {"finish_reason": "stop", "usage": None}))
    return out


def sse_body(stream: list[tuple[str, dict]], after: int = -1, until: int | None = None) -> str:
    """The Server-Sent Events text of stream's events after id ``after`` (ids count from 0)
    and before id ``until`` (None: to the end), as Rill writes them."""
    end = len(stream) if until is None else until
    return "".join(f"id: {i}\nevent: {name}\ndata: {json.dumps(data)}\n\n"
                   for i, (name, data) in enumerate(stream) if after < i < end)


def route_chat(page, stream: list[tuple[str, dict]], cut_at: int | None = None,
               resumable: dict | None = None) -> list[str]:
    """Serve ``stream`` to the page in place of Rill: ``POST …/api/chat`` answers its events
    before id ``cut_at`` (None: all of them; the body then ends, as a dropped connection
    would), and ``GET …/api/chat/<id>/events`` the events after its Last-Event-ID, as Rill
    does, while ``resumable["on"]`` is true (default true), else it fails as a network error.
    Returns the list of requests served ("POST" or "GET <last event id>"), growing."""
    served: list[str] = []
    headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-store"}
    switch = resumable if resumable is not None else {"on": True}

    def chat(route) -> None:
        if route.request.method != "POST":
            route.fallback()
            return
        served.append("POST")
        route.fulfill(status=200, headers=headers, body=sse_body(stream, until=cut_at))

    def resume(route) -> None:
        last = route.request.headers.get("last-event-id", "-1")
        served.append(f"GET {last}")
        if not switch["on"]:
            route.abort("connectionreset")
            return
        route.fulfill(status=200, headers=headers, body=sse_body(stream, after=int(last)))

    page.route("**/api/chat", chat)
    page.route("**/api/chat/*/events", resume)
    return served


# The answer's parts on screen, in order: ("step", the summary's text) for a tool step,
# ("text", the inner text of the Markdown between steps).
SHOWN = """() => {
    const body = [...document.querySelectorAll('.turn-assistant .turn-text')].pop();
    const parts = [];
    for (const node of body.children) {
        if (node.matches('.tool-step')) {
            parts.push(['step', node.querySelector('summary').textContent]);
        } else if (parts.length && parts[parts.length - 1][0] === 'text') {
            parts[parts.length - 1][1] += '\\n\\n' + node.innerText;
        } else {
            parts.push(['text', node.innerText]);
        }
    }
    return parts;
}"""


def shown_answer(page) -> list[tuple[str, str]]:
    """The last answer's parts on screen (see :data:`EXPECTED`)."""
    return [tuple(part) for part in page.evaluate(SHOWN)]
