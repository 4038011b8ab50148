// Rill's chat page: POST /api/chat with fetch and read the Server-Sent Events body as it
// arrives. Model output is only ever inserted as text (textContent), never as HTML.
(() => {
  "use strict";

  // An SSE parser per the WHATWG HTML Standard ("Server-sent events", event stream
  // interpretation): lines end with \n, \r\n or \r; ":" starts a comment; data lines of
  // one event are joined with \n; a blank line dispatches. push() takes decoded text.
  function createSseParser(onEvent) {
    let buffer = "";
    let data = [];
    let event = "";
    let id = null;
    function line(text) {
      if (text === "") {
        if (data.length) onEvent({ event: event || "message", data: data.join("\n"), id });
        data = [];
        event = "";
        return;
      }
      if (text[0] === ":") return;
      const colon = text.indexOf(":");
      const field = colon === -1 ? text : text.slice(0, colon);
      let value = colon === -1 ? "" : text.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") event = value;
      else if (field === "id" && !value.includes("\0")) id = value;
    }
    return {
      push(text) {
        buffer += text;
        let start = 0;
        for (let i = 0; i < buffer.length; i++) {
          const ch = buffer[i];
          if (ch !== "\n" && ch !== "\r") continue;
          if (ch === "\r" && i + 1 === buffer.length) break; // wait: maybe \r\n
          line(buffer.slice(start, i));
          if (ch === "\r" && buffer[i + 1] === "\n") i++;
          start = i + 1;
        }
        buffer = buffer.slice(start);
      },
    };
  }

  const root = document.getElementById("chat");
  if (!root) {
    window.rill = { parseSse: createSseParser };
    return;
  }
  const apiUrl = root.dataset.apiUrl;
  const transcript = document.getElementById("transcript");
  const form = document.getElementById("composer");
  const prompt = document.getElementById("prompt");
  const sendButton = document.getElementById("send");
  const stopButton = document.getElementById("stop");
  const statusLine = document.getElementById("status");
  const modelPicker = document.getElementById("model");

  const history = [];
  let controller = null;

  function setStatus(text, kind) {
    statusLine.textContent = text;
    statusLine.className = "status" + (kind ? " status-" + kind : "");
  }

  function setStreaming(on) {
    stopButton.disabled = !on;
    sendButton.disabled = on || !prompt.value.trim();
    root.classList.toggle("streaming", on);
  }

  function addTurn(role, text) {
    const empty = document.getElementById("empty-state");
    if (empty) empty.remove();
    const item = document.createElement("li");
    item.className = "turn turn-" + role;
    const label = document.createElement("span");
    label.className = "turn-label";
    label.textContent = role === "user" ? "You" : "Assistant";
    item.append(label);
    let thinking = null;
    if (role === "assistant") {
      thinking = document.createElement("details");
      thinking.className = "thinking";
      thinking.hidden = true;
      const summary = document.createElement("summary");
      summary.textContent = "Thinking…";
      const thought = document.createElement("div");
      thought.className = "thinking-text";
      thinking.append(summary, thought);
      item.append(thinking);
    }
    const body = document.createElement("div");
    body.className = "turn-text";
    body.textContent = text;
    item.append(body);
    transcript.append(item);
    item.scrollIntoView({ block: "end" });
    return { item, body, thinking };
  }

  function retryAfterText(response) {
    const seconds = parseInt(response.headers.get("Retry-After") || "", 10);
    return Number.isFinite(seconds) ? ` Try again in ${seconds} s.` : "";
  }

  async function errorMessage(response) {
    try {
      const payload = await response.json();
      if (payload && payload.error && payload.error.message) {
        return payload.error.message + (response.status === 429 ? retryAfterText(response) : "");
      }
    } catch (_) { /* not JSON: fall through */ }
    return `The server answered ${response.status}. Please try again.`;
  }

  function doneText(payload, tokens, started, firstTokenAt) {
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const usage = payload.usage && payload.usage.completion_tokens;
    const count = usage || tokens;
    const ttft = firstTokenAt ? ` · first token ${Math.round(firstTokenAt - started)} ms` : "";
    let text = `Done — ${count} tokens in ${seconds} s${ttft}`;
    if (payload.finish_reason === "length") text += " (stopped at the token limit)";
    if (payload.finish_reason === "cancelled") text = `Stopped — ${count} tokens`;
    return text;
  }

  async function send(text) {
    history.push({ role: "user", content: text });
    addTurn("user", text);
    const turn = addTurn("assistant", "");
    turn.item.setAttribute("aria-busy", "true");
    const body = { messages: history.filter((m) => m.content) };
    if (modelPicker) body.model = modelPicker.value;
    controller = new AbortController();
    setStreaming(true);
    setStatus("Connecting…");
    const started = performance.now();
    let answer = "";
    let tokens = 0;
    let firstTokenAt = 0;
    let finished = false;
    try {
      const response = await fetch(apiUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) {
        finished = true;
        setStatus(await errorMessage(response), "error");
        turn.item.classList.add("failed");
        return;
      }
      const parser = createSseParser((message) => {
        let payload;
        try { payload = JSON.parse(message.data); } catch (_) { return; }
        if (message.event === "start") {
          setStatus("Generating…");
        } else if (message.event === "delta") {
          if (!firstTokenAt) firstTokenAt = performance.now();
          answer += payload.content;
          turn.body.append(document.createTextNode(payload.content));
          tokens += 1;
          setStatus(`Generating… ${tokens} tokens`);
          keepInView(turn.item);
        } else if (message.event === "reasoning") {
          turn.thinking.hidden = false;
          turn.thinking.querySelector(".thinking-text").append(
            document.createTextNode(payload.content));
        } else if (message.event === "done") {
          finished = true;
          setStatus(doneText(payload, tokens, started, firstTokenAt), "done");
        } else if (message.event === "error") {
          finished = true;
          turn.item.classList.add("failed");
          setStatus(payload.message || "The answer failed.", "error");
        }
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
      }
      if (!finished) {
        setStatus("Connection lost — the answer may be incomplete.", "error");
      }
    } catch (error) {
      if (error.name === "AbortError") {
        setStatus("Stopped.");
      } else if (!finished) {
        setStatus("Connection lost — the answer may be incomplete.", "error");
      }
    } finally {
      if (answer) history.push({ role: "assistant", content: answer });
      turn.item.removeAttribute("aria-busy");
      controller = null;
      setStreaming(false);
      prompt.focus();
    }
  }

  // Follow the answer only while the reader is at the bottom; scrolling up stops it.
  function keepInView(item) {
    const nearBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 80;
    if (nearBottom) item.scrollIntoView({ block: "end" });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text || controller) return;
    prompt.value = "";
    send(text);
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  prompt.addEventListener("input", () => {
    sendButton.disabled = Boolean(controller) || !prompt.value.trim();
  });
  stopButton.addEventListener("click", () => {
    if (controller) controller.abort();
  });

  window.rill = { parseSse: createSseParser };
  prompt.focus();
})();
