// Rill's chat page: POST the conversation with fetch and read the Server-Sent Events body as
// it arrives; resume from the last event id when the connection drops, the tab hides or the
// page reloads. Needs sse.js, store.js and render.js (window.rill) loaded first.
(() => {
  "use strict";

  const { sse, store, render } = window.rill;
  const { element } = render;

  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 8000;
  const MAX_ATTEMPTS = 6;
  const HIDDEN_GRACE_MS = 2000; // then a hidden tab lets go of its connection
  const SAVE_EVERY_MS = 250;
  const STALE_PENDING_MS = 20000; // another tab's answer nobody has touched: adopt it
  const LOST = "Connection lost — the answer is incomplete. Retry to pick it up again.";
  const NEVER_STARTED = "Connection lost before the answer started. Please send again.";
  const GONE = "This answer is no longer on the server (it expired, or the server restarted); "
    + "the part that arrived is kept.";

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

  // "Done — N tokens in X.Y s · first token N ms · N tok/s" (TTFT, then the writing rate).
  function doneText(run, payload) {
    const now = Date.now();
    const seconds = ((now - run.started) / 1000).toFixed(1);
    const usage = payload.usage && payload.usage.completion_tokens;
    const count = Number.isInteger(usage) ? usage : run.tokens;
    const tokens = plural(count, "token");
    if (payload.finish_reason === "cancelled") return `Stopped — ${tokens} in ${seconds} s`;
    let text = `Done — ${tokens} in ${seconds} s`;
    if (run.firstTokenAt) {
      text += ` · first token ${Math.round(run.firstTokenAt - run.started)} ms`;
      const writing = (now - run.firstTokenAt) / 1000;
      if (count > 1 && writing > 0) {
        const rate = count / writing;
        text += ` · ${rate < 10 ? rate.toFixed(1) : Math.round(rate)} tok/s`;
      }
    }
    if (payload.finish_reason === "length") text += " (stopped at the token limit)";
    return text;
  }

  function shortTime(ms) {
    const date = new Date(ms);
    const today = new Date();
    return date.toDateString() === today.toDateString()
      ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : date.toLocaleDateString([], { month: "short", day: "numeric" });
  }

  // Only what the API takes: roles and text, without empty (failed) answers.
  function apiHistory(messages) {
    return messages.filter((m) => m.content).map(({ role, content }) => ({ role, content }));
  }

  function tabId() {
    try {
      let id = sessionStorage.getItem("rill.tab");
      if (!id) {
        id = store.newId();
        sessionStorage.setItem("rill.tab", id);
      }
      return id;
    } catch (_) {
      return store.newId();
    }
  }

  function startChat(root) {
    const $ = (id) => document.getElementById(id);
    const app = $("app") || document.body;
    const transcript = $("transcript");
    const form = $("composer");
    const prompt = $("prompt");
    const sendButton = $("send");
    const stopButton = $("stop");
    const retryButton = $("retry");
    const statusLine = $("status");
    const modelPicker = $("model");
    const emptyState = $("empty-state");
    const sidebarList = $("conversation-list");
    const sidebarEmpty = $("conversations-empty");
    const toggleSidebar = $("toggle-sidebar");
    const backdrop = $("sidebar-backdrop");
    const apiUrl = root.dataset.apiUrl;
    // Cookie-authenticated POSTs carry the CSRF token the page was rendered with.
    const csrfMeta = document.querySelector('meta[name="csrf-token"]');
    const csrfHeaders = csrfMeta && csrfMeta.content ? { "X-CSRFToken": csrfMeta.content } : {};
    const tab = tabId();
    const regenerate = render.button("regenerate", "Regenerate", "Regenerate this answer");
    regenerate.id = "regenerate";
    let currentId = store.current();
    let run = null; // the answer in flight (one at a time)
    let unloading = false;

    // ---- Page furniture ---------------------------------------------------------------

    function setStatus(text, kind) {
      statusLine.textContent = text;
      statusLine.className = kind ? `status status-${kind}` : "status";
    }

    // Signed out while the page was open (the session ended): offer the way back in.
    function signInLink() {
      const link = document.createElement("a");
      link.href = root.dataset.loginUrl;
      link.textContent = "Sign in";
      statusLine.append(" ", link);
    }

    function busy() {
      return Boolean(run) && run.phase !== "lost";
    }

    function updateButtons() {
      sendButton.disabled = busy() || !prompt.value.trim();
      stopButton.disabled = !run;
      retryButton.hidden = !(run && run.phase === "lost");
      regenerate.disabled = busy();
      root.classList.toggle("streaming", busy());
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

    function showTurn(turn, index) {
      turn.item.dataset.index = String(index);
      transcript.append(turn.item);
      emptyState.hidden = true;
    }

    // Regenerate sits on the last answer of the conversation on screen, when it is settled.
    function placeRegenerate() {
      const last = transcript.lastElementChild;
      const settled = last && last.dataset.role === "assistant"
        && !(run && run.turn && run.turn.item === last);
      if (settled) last.querySelector(".turn-actions").append(regenerate);
      else regenerate.remove();
    }

    function noteOn(item, text) {
      let note = item.querySelector(".turn-note");
      if (!note) {
        note = element("p", "turn-note");
        item.append(note);
      }
      note.textContent = text;
    }

    // ---- Conversations ----------------------------------------------------------------

    function showConversation(id) {
      const conversation = id ? store.get(id) : null;
      currentId = conversation ? conversation.id : null;
      store.setCurrent(currentId);
      transcript.replaceChildren();
      (conversation ? conversation.messages : []).forEach((message, index) => {
        const turn = render.createTurn(message.role, message.content, message.model);
        if (message.status) turn.item.classList.add(message.status);
        if (message.note) noteOn(turn.item, message.note);
        showTurn(turn, index);
      });
      if (run && run.turn && run.conversation === currentId) showTurn(run.turn, run.index);
      emptyState.hidden = transcript.children.length > 0;
      if (!run) setStatus("");
      renderSidebar();
      placeRegenerate();
      updateButtons();
      scrollToEnd();
    }

    function conversationItem(conversation) {
      const title = conversation.title || "Untitled";
      const item = element("li", "conversation");
      item.dataset.id = conversation.id;
      const open = element("button", "conversation-open");
      open.type = "button";
      open.append(element("span", "conversation-title", title),
                  element("time", "conversation-time", shortTime(conversation.updated)));
      open.querySelector("time").dateTime = new Date(conversation.updated).toISOString();
      if (conversation.id === currentId) {
        item.classList.add("active");
        open.setAttribute("aria-current", "page");
      }
      if (run && run.conversation === conversation.id && busy()) item.classList.add("live");
      const actions = element("div", "conversation-actions");
      actions.append(render.button("conversation-rename", "✎", `Rename “${title}”`),
                     render.button("conversation-delete", "✕", `Delete “${title}”`));
      item.append(open, actions);
      return item;
    }

    function renderSidebar() {
      const conversations = store.list();
      sidebarList.replaceChildren(...conversations.map(conversationItem));
      sidebarEmpty.hidden = conversations.length > 0;
    }

    function startRename(item) {
      const id = item.dataset.id;
      const conversation = store.get(id);
      if (!conversation) return;
      const input = element("input", "conversation-rename-input");
      input.type = "text";
      input.value = conversation.title;
      input.maxLength = 120;
      input.setAttribute("aria-label", "Conversation title");
      let done = false;
      const finish = (save) => {
        if (done) return;
        done = true;
        if (save && input.value.trim()) store.rename(id, input.value);
        renderSidebar();
      };
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter") { event.preventDefault(); finish(true); }
        else if (event.key === "Escape") { event.preventDefault(); finish(false); }
      });
      input.addEventListener("blur", () => finish(true));
      item.classList.add("renaming");
      item.replaceChildren(input);
      input.focus();
      input.select();
    }

    function askDelete(item) {
      const confirmBox = element("div", "conversation-confirm");
      confirmBox.append(element("span", "conversation-confirm-text", "Delete?"),
                        render.button("conversation-delete-confirm", "Delete"),
                        render.button("conversation-delete-cancel", "Cancel"));
      item.classList.add("confirming");
      item.querySelector(".conversation-actions").replaceWith(confirmBox);
      confirmBox.querySelector(".conversation-delete-cancel").focus();
    }

    function deleteConversation(id) {
      if (run && run.conversation === id) stop();
      store.remove(id);
      if (currentId === id) showConversation(null);
      else renderSidebar();
    }

    function setSidebar(open) {
      app.classList.toggle("sidebar-open", open);
      if (toggleSidebar) toggleSidebar.setAttribute("aria-expanded", String(open));
      if (backdrop) backdrop.hidden = !open;
    }

    // ---- An answer in flight ----------------------------------------------------------

    function newRun(conversation, index, model) {
      return {
        conversation, index, model, streamId: null, lastId: -1, source: "", reasoning: "",
        tokens: 0, started: Date.now(), firstTokenAt: 0, outcome: null, payload: null,
        controller: null, attempts: 0, timer: 0, hiddenTimer: 0, frame: 0, savedAt: 0,
        phase: "connecting", shutdown: null, retryAfterMs: 0, turn: null, question: null,
        replaced: null, finished: false,
      };
    }

    function attachTurn(r) {
      r.turn = render.createTurn("assistant", r.source, r.model);
      r.turn.item.setAttribute("aria-busy", "true");
      if (r.conversation === currentId) {
        showTurn(r.turn, r.index);
        scrollToEnd();
      }
      paintThinking(r);
      placeRegenerate();
    }

    function paintThinking(r) {
      if (!r.reasoning) return;
      r.turn.thinking.details.hidden = false;
      r.turn.thinking.text.textContent = r.reasoning;
    }

    function progressText(r) {
      return r.tokens ? `Generating… ${plural(r.tokens, "token")}` : "Generating…";
    }

    // Re-render the answer from its Markdown source once per animation frame, not per token.
    function schedulePaint(r) {
      if (r.frame) return;
      r.frame = requestAnimationFrame(() => {
        r.frame = 0;
        paint(r);
      });
    }

    function paint(r) {
      following(() => {
        render.renderMarkdown(r.turn.body, r.source);
        paintThinking(r);
      });
      if (!r.outcome && r.phase === "streaming" && r === run) setStatus(progressText(r), "busy");
      saveProgress(r, false);
    }

    // The stream id, the last event id and the text up to it are stored together, so a
    // reload resumes exactly after what it shows.
    function saveProgress(r, force) {
      if (!r.streamId || r.finished) return;
      const now = Date.now();
      if (!force && now - r.savedAt < SAVE_EVERY_MS) return;
      r.savedAt = now;
      store.savePending({
        conversation: r.conversation, index: r.index, streamId: r.streamId, lastId: r.lastId,
        source: r.source, reasoning: r.reasoning, model: r.model, tokens: r.tokens,
        started: r.started, firstTokenAt: r.firstTokenAt, tab,
      });
    }

    const handlers = {
      start(r, payload) {
        r.streamId = payload.stream_id || null;
        if (payload.model) {
          r.model = payload.model;
          render.setModel(r.turn, payload.model);
        }
        setStatus("Generating…", "busy");
        saveProgress(r, true);
      },
      delta(r, payload) {
        if (!payload.content) return;
        if (!r.firstTokenAt) r.firstTokenAt = Date.now();
        r.tokens += 1;
        r.source += payload.content;
      },
      reasoning(r, payload) {
        if (payload.content) r.reasoning += payload.content;
      },
      done(r, payload) {
        r.outcome = "done";
        r.payload = payload;
      },
      error(r, payload) {
        r.outcome = "error";
        r.payload = payload;
      },
    };

    // Each event id is applied once: a replay after a resume skips what was already seen.
    // An error without an id (the hub was unreachable) or a shutdown error means: resume.
    function onEvent(r, message, controller) {
      if (r.outcome || r.finished || r.controller !== controller) return;
      const id = message.ownId === null ? null : Number(message.ownId);
      const hasId = id !== null && Number.isInteger(id);
      if (hasId && id <= r.lastId) return;
      let payload;
      try { payload = JSON.parse(message.data) || {}; } catch (_) { return; }
      if (message.event === "error" && (!hasId || payload.code === "hub_unavailable")) {
        controller.abort("transient");
        return;
      }
      if (hasId) r.lastId = id;
      if (message.event === "error" && payload.code === "shutdown" && r.streamId) {
        r.shutdown = payload;
        r.retryAfterMs = (Number(payload.retry_after) || 1) * 1000;
        controller.abort("transient");
        return;
      }
      r.shutdown = null;
      const handler = handlers[message.event];
      if (!handler) return;
      handler(r, payload);
      if (r.outcome) paint(r);
      else schedulePaint(r);
    }

    // One connection: the POST or a resume. How it ended decides what comes next.
    async function connect(r, request) {
      const controller = new AbortController();
      r.controller = controller;
      r.phase = "connecting";
      updateButtons();
      const before = r.lastId;
      let response = null;
      let clean = false;
      try {
        response = await request(controller.signal);
        if (response.status === 204) {
          clean = true; // a finished stream with nothing after our last event (no body)
        } else if (response.ok) {
          r.phase = "streaming";
          if (r.streamId) setStatus(progressText(r), "busy");
          updateButtons();
          await sse.readBody(response.body,
                             sse.createParser((message) => onEvent(r, message, controller)));
          clean = true;
        }
      } catch (_) { /* a network error or an abort: told apart below */ }
      if (r.controller !== controller || r.finished) return;
      r.controller = null;
      if (unloading) return;
      const reason = controller.signal.aborted ? controller.signal.reason : null;
      if (response && !response.ok && !reason) {
        await notStreamed(r, response);
        return;
      }
      ended(r, reason, r.lastId > before, clean);
    }

    function ended(r, reason, progressed, clean) {
      if (r.outcome) return finish(r);
      if (reason === "stop") return finish(r, "stopped", "Stopped.");
      if (reason === "hidden") return pause(r);
      if (!r.streamId) return finish(r, "failed", NEVER_STARTED);
      if (progressed) r.attempts = 0; // a resume that brought events worked
      else if (r.shutdown && clean && reason !== "transient") {
        // The server replayed up to its shutdown error and nothing follows: it ended there.
        return finish(r, "failed", r.shutdown.message || "The server restarted.");
      }
      return scheduleResume(r);
    }

    // Exponential backoff with full jitter: a random wait up to min(cap, base · 2^attempt).
    function scheduleResume(r) {
      r.attempts += 1;
      if (r.attempts > MAX_ATTEMPTS) return connectionLost(r);
      const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (r.attempts - 1));
      const delay = Math.max(Math.random() * ceiling, r.retryAfterMs);
      r.retryAfterMs = 0;
      r.phase = "waiting";
      setStatus("Reconnecting…", "busy");
      updateButtons();
      r.timer = setTimeout(() => {
        r.timer = 0;
        resume(r);
      }, delay);
      return undefined;
    }

    function resume(r) {
      if (r !== run || r.finished || r.controller) return;
      if (document.hidden) {
        pause(r);
        return;
      }
      setStatus("Reconnecting…", "busy");
      const headers = { Accept: "text/event-stream" };
      if (r.lastId >= 0) headers["Last-Event-ID"] = String(r.lastId);
      const url = `${apiUrl}/${encodeURIComponent(r.streamId)}/events`;
      connect(r, (signal) => fetch(url, { headers, signal, cache: "no-store" }));
    }

    function pause(r) {
      r.phase = "paused";
      saveProgress(r, true);
      setStatus("Paused while this tab is hidden — it picks up again when you return.", "busy");
      updateButtons();
    }

    function connectionLost(r) {
      r.phase = "lost";
      r.attempts = 0;
      saveProgress(r, true);
      setStatus(LOST, "error");
      updateButtons();
      retryButton.focus({ preventScroll: true });
    }

    // The server answered with an error status instead of a stream.
    async function notStreamed(r, response) {
      if (!r.streamId) return refused(r, response);
      if (response.status === 404 || response.status === 410 || response.status === 400) {
        return finish(r, "failed", GONE);
      }
      const wait = retryAfterSeconds(response.headers);
      if (wait !== null) r.retryAfterMs = wait * 1000;
      return scheduleResume(r);
    }

    // Refused before streaming: the question was never answered, so it leaves the
    // conversation and goes back into the composer (a regenerated answer comes back).
    async function refused(r, response) {
      r.finished = true;
      setStatus(await refusalText(response), "error");
      if (response.status === 401 && root.dataset.loginUrl) signInLink();
      r.turn.item.remove();
      if (r.replaced) {
        store.update(r.conversation, (c) => c.messages.push(r.replaced));
        if (r.conversation === currentId) {
          const turn = render.createTurn("assistant", r.replaced.content, r.replaced.model);
          showTurn(turn, r.index);
        }
      } else {
        store.update(r.conversation, (c) => { c.messages.splice(r.index - 1, 1); });
        if (r.question) r.question.item.classList.add("unsent");
        if (!prompt.value.trim() && r.question) prompt.value = r.question.body.textContent;
      }
      run = null;
      placeRegenerate();
      renderSidebar();
      updateButtons();
    }

    // Settle the answer: say how it ended and keep it in its conversation.
    function finish(r, status, note) {
      if (r.finished) return;
      r.finished = true;
      clearTimeout(r.timer);
      clearTimeout(r.hiddenTimer);
      if (r.frame) cancelAnimationFrame(r.frame);
      if (r.controller) r.controller.abort("finished");
      r.controller = null;
      let kind = "error";
      let message = note;
      if (r.outcome === "done") {
        message = doneText(r, r.payload);
        kind = "done";
        if (r.payload.finish_reason === "cancelled") status = "stopped";
      } else if (r.outcome === "error") {
        status = "failed";
        message = r.payload.message || "The answer failed.";
      } else if (status === "stopped") {
        kind = "";
      }
      following(() => {
        render.renderMarkdown(r.turn.body, r.source);
        paintThinking(r);
        r.turn.item.removeAttribute("aria-busy");
        if (status) r.turn.item.classList.add(status);
        if (status === "failed") noteOn(r.turn.item, message);
      });
      if (r === run) setStatus(message, kind);
      const answer = { role: "assistant", content: r.source, model: r.model };
      if (status) answer.status = status;
      if (status === "failed") answer.note = message;
      if (store.get(r.conversation)) {
        store.update(r.conversation, (c) => {
          const there = c.messages[r.index];
          if (there && there.role === "assistant") c.messages[r.index] = answer;
          else if (c.messages.length === r.index) c.messages.push(answer);
        });
      }
      if (r.streamId) store.dropPending(r.streamId);
      if (r === run) run = null;
      following(placeRegenerate);
      renderSidebar();
      updateButtons();
      return undefined;
    }

    function post(r, messages) {
      const body = { messages: apiHistory(messages) };
      if (modelPicker) body.model = modelPicker.value;
      run = r;
      attachTurn(r);
      setStatus("Connecting…", "busy");
      renderSidebar();
      connect(r, (signal) => fetch(apiUrl, {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream",
                   ...csrfHeaders },
        body: JSON.stringify(body),
        signal,
      }));
    }

    // A lost answer is given up when the reader moves on.
    function abandonLost() {
      if (run && run.phase === "lost") {
        cancelOnServer(run);
        finish(run, "failed", LOST);
      }
    }

    function ask(question) {
      abandonLost();
      const id = currentId || store.newId();
      const conversation = store.update(id, (c) => c.messages.push({ role: "user", content: question }));
      currentId = id;
      store.setCurrent(id);
      const index = conversation.messages.length;
      const questionTurn = render.createTurn("user", question);
      showTurn(questionTurn, index - 1);
      scrollToEnd();
      const r = newRun(id, index, modelPicker ? modelPicker.value : null);
      r.question = questionTurn;
      post(r, conversation.messages);
    }

    function regenerateLast() {
      abandonLost();
      if (run || !currentId) return;
      const stored = store.get(currentId);
      const last = stored && stored.messages[stored.messages.length - 1];
      if (!last || last.role !== "assistant") return;
      let replaced = null;
      const conversation = store.update(currentId, (c) => { replaced = c.messages.pop(); });
      regenerate.remove();
      transcript.lastElementChild.remove();
      const r = newRun(currentId, conversation.messages.length,
                       modelPicker ? modelPicker.value : null);
      r.replaced = replaced;
      const questions = transcript.querySelectorAll(".turn-user");
      r.question = null;
      if (questions.length) r.question = { item: questions[questions.length - 1] };
      post(r, conversation.messages);
    }

    function cancelOnServer(r) {
      if (!r.streamId) return;
      fetch(`${apiUrl}/${encodeURIComponent(r.streamId)}/cancel`, { method: "POST", keepalive: true,
                                                                    headers: csrfHeaders })
        .catch(() => {});
    }

    // Stop cancels the generation on the server (closing a connection only orphans it,
    // and the server keeps generating for a grace period so a reconnect can resume), then
    // stops reading. The partial answer stays.
    function stop() {
      const r = run;
      if (!r) return;
      cancelOnServer(r);
      if (r.controller) r.controller.abort("stop");
      else finish(r, "stopped", "Stopped.");
    }

    // After a reload: pick up this tab's answer in flight where it left off.
    function resumePending() {
      const record = store.claimPending(tab, STALE_PENDING_MS);
      if (!record) return false;
      if (!store.get(record.conversation)) {
        store.dropPending(record.streamId);
        return false;
      }
      showConversation(record.conversation);
      const r = Object.assign(newRun(record.conversation, record.index, record.model), {
        streamId: record.streamId, lastId: record.lastId, source: record.source || "",
        reasoning: record.reasoning || "", tokens: record.tokens || 0,
        started: record.started || Date.now(), firstTokenAt: record.firstTokenAt || 0,
      });
      run = r;
      attachTurn(r);
      saveProgress(r, true);
      renderSidebar();
      resume(r);
      return true;
    }

    // ---- Wiring -----------------------------------------------------------------------

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const question = prompt.value.trim();
      if (!question || busy()) return;
      prompt.value = "";
      ask(question);
      updateButtons();
    });
    prompt.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        if (!busy() && prompt.value.trim()) form.requestSubmit();
      } else if (event.key === "Escape" && run) {
        stop();
      }
    });
    prompt.addEventListener("input", updateButtons);
    stopButton.addEventListener("click", stop);
    retryButton.addEventListener("click", () => {
      if (!run || run.phase !== "lost") return;
      run.attempts = 0;
      resume(run);
      updateButtons();
    });

    transcript.addEventListener("click", (event) => {
      const target = event.target.closest("button");
      if (!target) return;
      const item = target.closest(".turn");
      if (target === regenerate) {
        regenerateLast();
      } else if (target.classList.contains("copy-code")) {
        const code = target.closest(".code-block").querySelector("pre");
        render.copyWithFeedback(target, code ? code.textContent : "");
      } else if (target.classList.contains("copy-answer") && item) {
        let source = "";
        if (run && run.turn && run.turn.item === item) source = run.source;
        else {
          const conversation = store.get(currentId);
          const message = conversation && conversation.messages[Number(item.dataset.index)];
          source = message ? message.content : item.querySelector(".turn-text").textContent;
        }
        render.copyWithFeedback(target, source);
      }
    });

    sidebarList.addEventListener("click", (event) => {
      const target = event.target.closest("button");
      const item = event.target.closest(".conversation");
      if (!target || !item) return;
      const id = item.dataset.id;
      if (target.classList.contains("conversation-open")) {
        showConversation(id);
        setSidebar(false);
      } else if (target.classList.contains("conversation-rename")) {
        startRename(item);
      } else if (target.classList.contains("conversation-delete")) {
        askDelete(item);
      } else if (target.classList.contains("conversation-delete-confirm")) {
        deleteConversation(id);
      } else if (target.classList.contains("conversation-delete-cancel")) {
        renderSidebar();
      }
    });
    $("new-chat").addEventListener("click", () => {
      abandonLost();
      showConversation(null);
      setSidebar(false);
      prompt.focus();
    });
    if (toggleSidebar) {
      toggleSidebar.addEventListener("click", () => {
        setSidebar(!app.classList.contains("sidebar-open"));
      });
    }
    if (backdrop) backdrop.addEventListener("click", () => setSidebar(false));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && app.classList.contains("sidebar-open")) setSidebar(false);
    });

    // A hidden tab lets go of its connection after a grace (the server keeps generating),
    // so many background tabs never use up the browser's six connections per origin.
    document.addEventListener("visibilitychange", () => {
      const r = run;
      if (!r) return;
      if (document.hidden) {
        saveProgress(r, true);
        const release = () => {
          r.hiddenTimer = 0;
          if (!document.hidden || r.finished || !r.controller) return;
          if (!r.streamId) r.hiddenTimer = setTimeout(release, 500); // not resumable yet
          else r.controller.abort("hidden");
        };
        if (!r.hiddenTimer) r.hiddenTimer = setTimeout(release, HIDDEN_GRACE_MS);
      } else {
        clearTimeout(r.hiddenTimer);
        r.hiddenTimer = 0;
        if (r.phase === "paused") {
          r.attempts = 0;
          resume(r);
        }
      }
    });
    window.addEventListener("pagehide", () => {
      if (run) saveProgress(run, true);
      unloading = true;
    });
    window.addEventListener("pageshow", (event) => {
      unloading = false;
      if (event.persisted && run && !run.controller && !run.timer) resume(run);
    });
    window.addEventListener("storage", (event) => {
      if (event.key === store.KEYS.conversations) renderSidebar();
    });

    if (!resumePending()) showConversation(currentId);
    updateButtons();
    prompt.focus();
  }

  const root = document.getElementById("chat");
  if (root) startChat(root);
})();
