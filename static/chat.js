// Rill's chat page: POST the conversation to the API with fetch and read the Server-Sent
// Events body as it arrives. Model output is only ever inserted as text, never as HTML.
(() => {
  "use strict";

  const LOST = "Connection lost — the answer may be incomplete.";
  const LINE_END = /\r\n|\r|\n/g;

  // Parse an event stream per the WHATWG HTML Standard, "Server-sent events" (event stream
  // interpretation). push(text) takes decoded text in chunks of any size; onEvent gets
  // {event, data, id} for each dispatched event. An unfinished event at the end is dropped.
  function createSseParser(onEvent) {
    let buffer = "";
    let started = false;
    let skipLF = false; // the last chunk ended in \r: a leading \n completes that line end
    let data = [];
    let type = "";
    let lastEventId = "";

    function dispatch() {
      if (data.length) onEvent({ event: type || "message", data: data.join("\n"), id: lastEventId });
      data = [];
      type = "";
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
      else if (field === "id" && !value.includes("\0")) lastEventId = value;
      return undefined;
    }

    function push(text) {
      if (!started && text) {
        started = true;
        if (text[0] === "\uFEFF") text = text.slice(1);
      }
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

  // ---- DOM helpers --------------------------------------------------------------------

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    return node;
  }

  function createThinking() {
    const details = element("details", "thinking");
    details.hidden = true;
    const text = document.createTextNode("");
    details.append(element("summary", "", "Thinking…"), element("div", "thinking-text"));
    details.lastChild.append(text);
    return { details, text };
  }

  // One <li> of the transcript. Text grows through a single Text node (appendData), so the
  // answer is never parsed as HTML and long answers do not pile up thousands of nodes.
  function createTurn(role, content) {
    const item = element("li", `turn turn-${role}`);
    item.dataset.role = role;
    const label = element("p", "turn-label");
    label.append(element("span", "turn-role", role === "user" ? "You" : "Assistant"));
    const body = element("div", "turn-text");
    const text = document.createTextNode(content || "");
    body.append(text);
    const turn = { item, label, text, thinking: null };
    if (role === "assistant") {
      turn.thinking = createThinking();
      item.append(label, turn.thinking.details, body);
    } else {
      item.append(label, body);
    }
    return turn;
  }

  // ---- Status wording -----------------------------------------------------------------

  function plural(n, word) {
    return `${n} ${word}${n === 1 ? "" : "s"}`;
  }

  // Retry-After is delay-seconds or an HTTP-date (RFC 9110, section 10.2.3); null if absent.
  function retryAfterSeconds(headers) {
    const value = (headers.get("Retry-After") || "").trim();
    if (!value) return null;
    if (/^\d+$/.test(value)) return Number(value);
    const at = Date.parse(value);
    return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
  }

  async function refusalText(response) {
    let message = `The server answered ${response.status}. Please try again.`;
    try {
      const payload = await response.json();
      if (payload && payload.error && payload.error.message) message = payload.error.message;
    } catch (_) { /* not JSON (a proxy's page, say): keep the generic message */ }
    const wait = response.status === 429 || response.status === 503
      ? retryAfterSeconds(response.headers) : null;
    if (wait !== null && !message.includes(`${wait} s`)) {
      message += ` Please wait ${plural(wait, "second")} before sending again.`;
    }
    return message;
  }

  function doneText(run, payload) {
    const seconds = ((performance.now() - run.started) / 1000).toFixed(1);
    const usage = payload.usage && payload.usage.completion_tokens;
    const tokens = plural(Number.isInteger(usage) ? usage : run.tokens, "token");
    if (payload.finish_reason === "cancelled") return `Stopped — ${tokens} in ${seconds} s`;
    let text = `Done — ${tokens} in ${seconds} s`;
    if (run.firstTokenAt) text += ` · first token ${Math.round(run.firstTokenAt - run.started)} ms`;
    if (payload.finish_reason === "length") text += " (stopped at the token limit)";
    return text;
  }

  // ---- Streaming ----------------------------------------------------------------------

  // Feed a fetch body through a streaming TextDecoder (multi-byte characters may straddle
  // chunks) into the SSE parser until the server closes it.
  async function readBody(body, parser) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(decoder.decode(value, { stream: true }));
    }
    parser.push(decoder.decode());
  }

  function startChat(root) {
    const transcript = document.getElementById("transcript");
    const form = document.getElementById("composer");
    const prompt = document.getElementById("prompt");
    const sendButton = document.getElementById("send");
    const stopButton = document.getElementById("stop");
    const statusLine = document.getElementById("status");
    const modelPicker = document.getElementById("model");
    const emptyState = document.getElementById("empty-state");
    const apiUrl = root.dataset.apiUrl;
    const history = [];
    let controller = null;
    let streamId = null; // the running answer's stream, for the cancel endpoint

    function setStatus(text, kind) {
      statusLine.textContent = text;
      statusLine.className = kind ? `status status-${kind}` : "status";
    }

    function updateButtons() {
      sendButton.disabled = Boolean(controller) || !prompt.value.trim();
      stopButton.disabled = !controller;
      root.classList.toggle("streaming", Boolean(controller));
    }

    // Follow the answer only while the reader is at the bottom; scrolling up stops that.
    function atBottom() {
      const page = document.documentElement;
      return window.innerHeight + window.scrollY >= page.scrollHeight - 48;
    }

    function scrollToEnd() {
      window.scrollTo({ top: document.documentElement.scrollHeight });
    }

    function following(grow) {
      const follow = atBottom();
      grow();
      if (follow) scrollToEnd();
    }

    function addTurn(role, content) {
      if (emptyState) emptyState.hidden = true;
      const turn = createTurn(role, content);
      transcript.append(turn.item);
      scrollToEnd();
      return turn;
    }

    const handlers = {
      start(run, payload) {
        streamId = payload.stream_id || null;
        if (payload.model) run.turn.label.append(element("span", "turn-model", payload.model));
        setStatus("Generating…", "busy");
      },
      delta(run, payload) {
        if (!payload.content) return;
        if (!run.firstTokenAt) run.firstTokenAt = performance.now();
        run.tokens += 1;
        following(() => run.turn.text.appendData(payload.content));
        setStatus(`Generating… ${plural(run.tokens, "token")}`, "busy");
      },
      reasoning(run, payload) {
        if (!payload.content) return;
        following(() => {
          run.turn.thinking.details.hidden = false;
          run.turn.thinking.text.appendData(payload.content);
        });
      },
      done(run, payload) {
        run.outcome = "done";
        setStatus(doneText(run, payload), "done");
      },
      error(run, payload) {
        run.outcome = "error";
        run.turn.item.classList.add("failed");
        setStatus(payload.message || "The answer failed.", "error");
      },
    };

    function onEvent(run, message) {
      const handler = handlers[message.event];
      if (!handler || run.outcome) return;
      let payload;
      try { payload = JSON.parse(message.data); } catch (_) { return; }
      handler(run, payload || {});
    }

    // The server refused before streaming: the question was never answered, so it leaves
    // the history and goes back into the composer to send again.
    async function refused(run, response, question) {
      run.outcome = "refused";
      setStatus(await refusalText(response), "error");
      run.turn.item.remove();
      run.question.item.classList.add("unsent");
      if (!prompt.value.trim()) prompt.value = question;
    }

    function lost(run) {
      run.turn.item.classList.add("failed");
      setStatus(LOST, "error");
    }

    function settle(run, question) {
      if (run.outcome !== "refused") {
        history.push({ role: "user", content: question });
        const answer = run.turn.text.data;
        if (answer) history.push({ role: "assistant", content: answer });
      }
      run.turn.item.removeAttribute("aria-busy");
      controller = null;
      streamId = null;
      updateButtons();
    }

    async function send(question) {
      const body = { messages: [...history, { role: "user", content: question }] };
      if (modelPicker) body.model = modelPicker.value;
      const run = { question: addTurn("user", question), turn: addTurn("assistant"),
                    started: performance.now(), firstTokenAt: 0, tokens: 0, outcome: null };
      run.turn.item.setAttribute("aria-busy", "true");
      controller = new AbortController();
      updateButtons();
      setStatus("Connecting…", "busy");
      try {
        const response = await fetch(apiUrl, {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
          body: JSON.stringify(body),
          signal: controller.signal,
        });
        if (!response.ok) return await refused(run, response, question);
        await readBody(response.body, createSseParser((message) => onEvent(run, message)));
        if (!run.outcome) lost(run);
      } catch (error) {
        if (run.outcome) return undefined; // done or error already said how it ended
        if (error.name === "AbortError") setStatus("Stopped.");
        else lost(run);
      } finally {
        settle(run, question);
      }
      return undefined;
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const question = prompt.value.trim();
      if (!question || controller) return;
      prompt.value = "";
      send(question);
    });
    prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        if (!controller && prompt.value.trim()) form.requestSubmit();
      } else if (event.key === "Escape" && controller) {
        stop();
      }
    });
    // Stop cancels the generation on the server (closing a connection only orphans it,
    // and the server keeps generating for a grace period so a reconnect can resume), then
    // stops reading. The partial answer stays.
    function stop() {
      if (!controller) return;
      if (streamId) {
        fetch(`${apiUrl}/${encodeURIComponent(streamId)}/cancel`, { method: "POST" })
          .catch(() => {});
      }
      controller.abort();
    }
    prompt.addEventListener("input", updateButtons);
    stopButton.addEventListener("click", stop);
    updateButtons();
    prompt.focus();
  }

  window.rill = { parseSse: createSseParser };
  const root = document.getElementById("chat");
  if (root) startChat(root);
})();
