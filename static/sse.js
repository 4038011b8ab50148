// Server-Sent Events over fetch: a spec parser and a body reader (an ES module).

const LINE_END = /\r\n|\r|\n/g;

// Parse an event stream per the WHATWG HTML Standard, "Server-sent events" (event stream
// interpretation). push(text) takes the stream's text in chunks of any size, as the spec's
// UTF-8 decode gives it (one leading BOM already dropped: readBody's TextDecoder does that,
// and only that one: a second BOM is part of the first line); onEvent gets
// {event, data, id, ownId} for each dispatched event: id is the stream's last event ID (it
// carries over, per the spec), ownId the id line of this very event or null, so an
// id-less event (a transient error) can be told apart. An unfinished event is dropped.
export function createParser(onEvent) {
  let buffer = "";
  let skipLF = false; // the last chunk ended in \r: a leading \n completes that line end
  let data = [];
  let type = "";
  let lastEventId = "";
  let ownId = null;

  function dispatch() {
    if (data.length) {
      onEvent({ event: type || "message", data: data.join("\n"), id: lastEventId, ownId });
    }
    data = [];
    type = "";
    ownId = null;
  }

  function processLine(line) {
    if (line === "") return dispatch();
    if (line[0] === ":") return undefined; // a comment, e.g. the ": ping" heartbeat
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") type = value;
    else if (field === "id" && !value.includes("\0")) {
      lastEventId = value;
      ownId = value;
    }
    return undefined;
  }

  function push(text) {
    if (skipLF && text) {
      skipLF = false;
      if (text[0] === "\n") text = text.slice(1);
    }
    const from = buffer.length; // the kept tail holds no line end: scan only new text
    buffer += text;
    LINE_END.lastIndex = from;
    let start = 0;
    for (let m = LINE_END.exec(buffer); m; m = LINE_END.exec(buffer)) {
      processLine(buffer.slice(start, m.index));
      start = LINE_END.lastIndex;
      skipLF = m[0] === "\r" && start === buffer.length;
    }
    buffer = buffer.slice(start);
  }

  return { push, get lastEventId() { return lastEventId; } };
}

// Feed a fetch body through a streaming TextDecoder (multi-byte characters may straddle
// chunks; a leading BOM is dropped, as the spec's UTF-8 decode does) into the parser until
// the server closes it. Rejects on a network error or abort.
export async function readBody(body, parser) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    parser.push(decoder.decode(value, { stream: true }));
  }
  parser.push(decoder.decode());
}
