// The composer and what it starts: ask a question, send an edited one, regenerate the last
// answer, stop an answer in flight, retry a lost one. An edit or a regenerate is a new version
// of its turn, shown in its place. A send waits while its conversation's answer is still
// being written (in any tab), and while this browser has as many answers in flight as the
// server allows it. What goes upstream is the branch on screen down to the question.
import * as store from "./store.js";
import * as render from "./render.js";
import { attachTurn, finish, newRun } from "./answer.js";
import { renderSidebar } from "./sidebar.js";
import { cancelOnServer, connect, resume } from "./stream.js";
import { apiUrl, busy, chosenModel, csrfHeaders, currentRun, focusPrompt, maxStreams, notify,
         runStatus, state, ui, updateButtons, writing } from "./state.js";
import { markShown, scrollToEnd, showConversation, showTurn, stale } from "./transcript.js";
import { LOST, STILL_WRITING, atCapacity } from "./wording.js";

// Only what the API takes: roles and text, without empty (failed) answers or one in flight.
function apiHistory(messages) {
  return messages.filter((m) => m.content && m.status !== "streaming")
    .map(({ role, content }) => ({ role, content }));
}

// Start the run r (its answer stored in flight), the turns before it history ([turn]).
function post(r, history) {
  const body = { messages: apiHistory(history) };
  if (ui.modelPicker) body.model = ui.modelPicker.value;
  attachTurn(r);
  if (r.conversation === state.currentId && !r.turn.item.isConnected) {
    showConversation(r.conversation); // a new version, in place of the one before
  } else {
    markShown();
  }
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
  if (id && writing(id)) return STILL_WRITING;
  const inFlight = store.streaming().length;
  if (maxStreams && inFlight >= maxStreams) return atCapacity(maxStreams);
  return null;
}

// What a new answer of this tab starts with.
function answerFields() {
  return { model: chosenModel(), started: Date.now(), tab: state.tab, seen: Date.now() };
}

// A question after the last turn on screen.
function ask(question) {
  if (stale()) showConversation(state.currentId); // what is sent is what is shown
  const id = state.currentId || store.newId();
  const shown = store.get(id);
  const last = shown ? shown.messages[shown.messages.length - 1] : null;
  const { question: asked, answer } = store.addExchange(id, question, answerFields(),
                                                        last ? last.id : null);
  state.currentId = id;
  store.setCurrent(id);
  const view = render.createTurn("user", question);
  showTurn(view, asked.id);
  scrollToEnd();
  const r = newRun(answer);
  r.question = { id: asked.id, content: question, view };
  post(r, store.path(id, asked.id));
}

// Start a new version of a turn (its parent's newest child, on screen in every tab): the run
// of its answer, which gives the screen back to the version before if refused.
function newVersion(id, parent, answer, question) {
  const before = store.picked(id, parent);
  store.pick(id, parent, question ? question.id : answer.id);
  const r = newRun(answer);
  r.unpick = { parent, child: before };
  if (question) r.question = { id: question.id, content: question.content, view: null };
  return r;
}

// Send question turnId of conversation id again as text: a new version of it, with a new
// answer. False (and a notice) if refused now; then() runs if the server refuses it.
export function sendEdit(id, turnId, text, then) {
  abandonLost();
  const why = refusal(id);
  notify(why || "");
  const above = why ? [] : store.path(id, turnId);
  if (!above.length) return false;
  const parent = above.length > 1 ? above[above.length - 2].id : null;
  const { question, answer } = store.addExchange(id, text, answerFields(), parent);
  const r = newVersion(id, parent, answer, question);
  r.refusedThen = then;
  post(r, store.path(id, question.id));
  return true;
}

// A new version of the last answer on screen; the ones before stay, a click away.
export function regenerateLast() {
  abandonLost();
  const id = state.currentId;
  const why = id ? refusal(id) : null;
  notify(why || "");
  const conversation = id && !why ? store.get(id) : null;
  const last = conversation && conversation.messages[conversation.messages.length - 1];
  if (!last || last.role !== "assistant" || last.status === "streaming") return;
  if (document.activeElement === ui.regenerate) focusPrompt(); // the button goes with the answer
  ui.regenerate.remove();
  const answer = store.addAnswer(id, last.parent, answerFields());
  post(newVersion(id, last.parent, answer, null), store.path(id, last.parent));
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
