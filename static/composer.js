// The composer and what it starts: ask a question, regenerate the last answer, stop the
// answer in flight, retry a lost one; and after a reload, pick up this tab's answer.
import * as store from "./store.js";
import * as render from "./render.js";
import { attachTurn, finish, newRun, saveProgress } from "./answer.js";
import { renderSidebar } from "./sidebar.js";
import { connect, resume } from "./stream.js";
import { apiUrl, busy, chosenModel, csrfHeaders, focusPrompt, setStatus, state, ui,
         updateButtons } from "./state.js";
import { scrollToEnd, showConversation, showTurn } from "./transcript.js";
import { LOST } from "./wording.js";

const STALE_PENDING_MS = 20000; // another tab's answer nobody has touched: adopt it

// Only what the API takes: roles and text, without empty (failed) answers.
function apiHistory(messages) {
  return messages.filter((m) => m.content).map(({ role, content }) => ({ role, content }));
}

function post(r, messages) {
  const body = { messages: apiHistory(messages) };
  if (ui.modelPicker) body.model = ui.modelPicker.value;
  state.run = r;
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

function cancelOnServer(r) {
  if (!r.streamId) return;
  fetch(`${apiUrl}/${encodeURIComponent(r.streamId)}/cancel`, { method: "POST", keepalive: true,
                                                                headers: csrfHeaders })
    .catch(() => {});
}

// A lost answer is given up when the reader moves on.
export function abandonLost() {
  const { run } = state;
  if (run && run.phase === "lost") {
    cancelOnServer(run);
    finish(run, "failed", LOST);
  }
}

function ask(question) {
  abandonLost();
  const id = state.currentId || store.newId();
  const message = { role: "user", content: question };
  const conversation = store.update(id, (c) => c.messages.push(message));
  state.currentId = id;
  store.setCurrent(id);
  const index = conversation.messages.length;
  const questionTurn = render.createTurn("user", question);
  showTurn(questionTurn, index - 1);
  scrollToEnd();
  const r = newRun(id, index, chosenModel());
  r.question = questionTurn;
  post(r, conversation.messages);
}

export function regenerateLast() {
  abandonLost();
  if (state.run || !state.currentId) return;
  const stored = store.get(state.currentId);
  const last = stored && stored.messages[stored.messages.length - 1];
  if (!last || last.role !== "assistant") return;
  let replaced = null;
  const conversation = store.update(state.currentId, (c) => { replaced = c.messages.pop(); });
  if (document.activeElement === ui.regenerate) focusPrompt(); // the button goes with the answer
  ui.regenerate.remove();
  ui.transcript.lastElementChild.remove();
  const r = newRun(state.currentId, conversation.messages.length, chosenModel());
  r.replaced = replaced;
  const questions = ui.transcript.querySelectorAll(".turn-user");
  r.question = null;
  if (questions.length) r.question = { item: questions[questions.length - 1] };
  post(r, conversation.messages);
}

// Stop cancels the generation on the server (closing a connection only orphans it,
// and the server keeps generating for a grace period so a reconnect can resume), then
// stops reading. The partial answer stays.
export function stop() {
  const r = state.run;
  if (!r) return;
  cancelOnServer(r);
  if (r.controller) r.controller.abort("stop");
  else finish(r, "stopped", "Stopped.");
}

// After a reload: pick up this tab's answer in flight where it left off.
export function resumePending() {
  const record = store.claimPending(state.tab, STALE_PENDING_MS);
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
    reasoningStarted: record.reasoningStarted || (record.reasoning ? record.started : 0),
    reasoningEnded: record.reasoningEnded || 0,
  });
  state.run = r;
  attachTurn(r);
  saveProgress(r, true);
  renderSidebar();
  resume(r);
  return true;
}

export function wireComposer() {
  const { form, prompt } = ui;
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
    } else if (event.key === "Escape" && state.run) {
      stop();
    }
  });
  prompt.addEventListener("input", updateButtons);
  ui.stopButton.addEventListener("click", stop);
  ui.retryButton.addEventListener("click", () => {
    const { run } = state;
    if (!run || run.phase !== "lost") return;
    run.attempts = 0;
    resume(run);
    updateButtons();
  });
}
