// The composer and what it starts: ask a question, regenerate the last answer, stop an
// answer in flight, retry a lost one. A send waits while its conversation's answer is still
// being written (in any tab), and while this browser has as many answers in flight as the
// server allows it.
import * as store from "./store.js";
import * as render from "./render.js";
import { attachTurn, finish, newRun } from "./answer.js";
import { renderSidebar } from "./sidebar.js";
import { cancelOnServer, connect, resume } from "./stream.js";
import { apiUrl, busy, chosenModel, csrfHeaders, currentRun, focusPrompt, maxStreams, notify,
         runStatus, state, ui, updateButtons } from "./state.js";
import { markShown, scrollToEnd, showTurn } from "./transcript.js";
import { LOST, STILL_WRITING, atCapacity } from "./wording.js";

// Only what the API takes: roles and text, without empty (failed) answers or one in flight.
function apiHistory(messages) {
  return messages.filter((m) => m.content && m.status !== "streaming")
    .map(({ role, content }) => ({ role, content }));
}

function post(r, messages) {
  const body = { messages: apiHistory(messages) };
  if (ui.modelPicker) body.model = ui.modelPicker.value;
  attachTurn(r);
  markShown();
  runStatus(r, "Connecting…", "busy");
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
export function abandonLost() {
  const run = currentRun();
  if (run && run.phase === "lost") {
    cancelOnServer(run.streamId);
    finish(run, "failed", LOST);
  }
}

// Why a new answer in conversation id may not start now (null: it may): one is still being
// written there, in this tab or another, or this browser is at its cap.
function refusal(id) {
  const inFlight = store.streaming();
  if (id && (state.runs.has(id) || inFlight.some((t) => t.conversation === id))) {
    return STILL_WRITING;
  }
  if (maxStreams && inFlight.length >= maxStreams) return atCapacity(maxStreams);
  return null;
}

function ask(question) {
  const id = state.currentId || store.newId();
  const { question: asked, answer } = store.addExchange(id, question, {
    model: chosenModel(), started: Date.now(), tab: state.tab, seen: Date.now(),
  });
  state.currentId = id;
  store.setCurrent(id);
  const view = render.createTurn("user", question);
  showTurn(view, asked.id);
  scrollToEnd();
  const r = newRun(answer);
  r.question = { id: asked.id, content: question, view };
  post(r, store.get(id).messages);
}

export function regenerateLast() {
  abandonLost();
  const id = state.currentId;
  const why = id ? refusal(id) : null;
  notify(why || "");
  const conversation = id && !why ? store.get(id) : null;
  const last = conversation && conversation.messages[conversation.messages.length - 1];
  if (!last || last.role !== "assistant" || last.status === "streaming") return;
  store.removeTurn(id, last.id);
  const answer = store.putTurn({
    id: store.newId(), conversation: id, role: "assistant", content: "", at: last.at,
    pair: last.pair, n: 1, model: chosenModel(), status: "streaming", lastId: -1,
    started: Date.now(), tab: state.tab, seen: Date.now(),
  }, { create: true });
  if (document.activeElement === ui.regenerate) focusPrompt(); // the button goes with the answer
  ui.regenerate.remove();
  const shown = ui.transcript.querySelector(`[data-turn="${last.id}"]`);
  if (shown) shown.remove();
  const r = newRun(answer);
  r.replaced = last;
  post(r, store.get(id).messages);
}

// Stop cancels the generation on the server (closing a connection only orphans it,
// and the server keeps generating for a grace period so a reconnect can resume), then
// stops reading. The partial answer stays. Only that conversation's answer stops.
export function stop(r = currentRun()) {
  if (!r) return;
  cancelOnServer(r.streamId);
  if (r.controller) r.controller.abort("stop");
  else finish(r, "stopped", "Stopped.");
}

function trySend() {
  const question = ui.prompt.value.trim();
  if (!question) return;
  abandonLost();
  const why = refusal(state.currentId);
  notify(why || "");
  if (why) return;
  ui.prompt.value = "";
  ask(question);
  updateButtons();
}

export function wireComposer() {
  const { form, prompt } = ui;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    trySend();
  });
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (busy()) notify(STILL_WRITING);
      else if (prompt.value.trim()) form.requestSubmit();
    } else if (event.key === "Escape" && currentRun()) {
      stop();
    }
  });
  prompt.addEventListener("input", updateButtons);
  ui.stopButton.addEventListener("click", () => stop());
  ui.retryButton.addEventListener("click", () => {
    const run = currentRun();
    if (!run || run.phase !== "lost") return;
    run.attempts = 0;
    resume(run);
    updateButtons();
  });
}
