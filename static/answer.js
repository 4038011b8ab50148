// An answer in flight (a "run"): its turn on screen, painted from its Markdown source once per
// frame, its progress saved for a reload, and how it settles into its conversation.
import * as store from "./store.js";
import * as render from "./render.js";
import { renderSidebar } from "./sidebar.js";
import { signInLink, setStatus, state, ui, updateButtons } from "./state.js";
import { following, noteOn, placeRegenerate, scrollToEnd, showTurn } from "./transcript.js";
import { doneText, progressText, refusalText } from "./wording.js";

const SAVE_EVERY_MS = 250;

// The answer at index of a conversation, from the model chosen.
export function newRun(conversation, index, model) {
  return {
    conversation, index, model, streamId: null, lastId: -1, source: "", reasoning: "",
    tokens: 0, started: Date.now(), firstTokenAt: 0, outcome: null, payload: null,
    controller: null, attempts: 0, timer: 0, hiddenTimer: 0, frame: 0, savedAt: 0,
    phase: "connecting", shutdown: null, retryAfterMs: 0, turn: null, question: null,
    replaced: null, finished: false, reasoningStarted: 0, reasoningEnded: 0,
  };
}

// The reasoning ends with the first text of the answer, or with the answer.
export function endReasoning(r) {
  if (r.reasoningStarted && !r.reasoningEnded) r.reasoningEnded = Date.now();
}

function thoughtMs(r) {
  return r.reasoningEnded ? r.reasoningEnded - r.reasoningStarted : null;
}

export function attachTurn(r) {
  r.turn = render.createTurn("assistant", r.source, r.model);
  r.turn.item.setAttribute("aria-busy", "true");
  if (r.conversation === state.currentId) {
    showTurn(r.turn, r.index);
    scrollToEnd();
  }
  paintThinking(r);
  placeRegenerate();
}

function paintThinking(r) {
  render.setThinking(r.turn, r.reasoning, thoughtMs(r));
}

// Re-render the answer from its Markdown source once per animation frame, not per token.
export function schedulePaint(r) {
  if (r.frame) return;
  r.frame = requestAnimationFrame(() => {
    r.frame = 0;
    paint(r);
  });
}

export function paint(r) {
  following(() => {
    render.renderMarkdown(r.turn.body, r.source);
    paintThinking(r);
  });
  if (!r.outcome && r.phase === "streaming" && r === state.run) {
    setStatus(progressText(r), "busy");
  }
  saveProgress(r, false);
}

// The stream id, the last event id and the text up to it are stored together, so a
// reload resumes exactly after what it shows.
export function saveProgress(r, force) {
  if (!r.streamId || r.finished) return;
  const now = Date.now();
  if (!force && now - r.savedAt < SAVE_EVERY_MS) return;
  r.savedAt = now;
  store.savePending({
    conversation: r.conversation, index: r.index, streamId: r.streamId, lastId: r.lastId,
    source: r.source, reasoning: r.reasoning, model: r.model, tokens: r.tokens,
    started: r.started, firstTokenAt: r.firstTokenAt, reasoningStarted: r.reasoningStarted,
    reasoningEnded: r.reasoningEnded, tab: state.tab,
  });
}

// Refused before streaming: the question was never answered, so it leaves the
// conversation and goes back into the composer (a regenerated answer comes back).
export async function refused(r, response) {
  r.finished = true;
  setStatus(await refusalText(response), "error");
  if (response.status === 401 && ui.root.dataset.loginUrl) signInLink();
  r.turn.item.remove();
  if (r.replaced) {
    store.update(r.conversation, (c) => c.messages.push(r.replaced));
    if (r.conversation === state.currentId) {
      const turn = render.createTurn("assistant", r.replaced.content, r.replaced.model);
      showTurn(turn, r.index);
    }
  } else {
    store.update(r.conversation, (c) => { c.messages.splice(r.index - 1, 1); });
    if (r.question) r.question.item.classList.add("unsent");
    if (!ui.prompt.value.trim() && r.question) ui.prompt.value = r.question.body.textContent;
  }
  state.run = null;
  placeRegenerate();
  renderSidebar();
  updateButtons();
}

// Settle the answer: say how it ended and keep it in its conversation. status is "stopped"
// or "failed" (with note, its message) when it did not end with a done or error event.
export function finish(r, status, note) {
  if (r.finished) return;
  r.finished = true;
  clearTimeout(r.timer);
  clearTimeout(r.hiddenTimer);
  if (r.frame) cancelAnimationFrame(r.frame);
  if (r.controller) r.controller.abort("finished");
  r.controller = null;
  endReasoning(r);
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
  if (r === state.run) setStatus(message, kind);
  const answer = { role: "assistant", content: r.source, model: r.model };
  if (status) answer.status = status;
  if (status === "failed") answer.note = message;
  if (r.reasoning) Object.assign(answer, { reasoning: r.reasoning, thoughtMs: thoughtMs(r) });
  if (store.get(r.conversation)) {
    store.update(r.conversation, (c) => {
      const there = c.messages[r.index];
      if (there && there.role === "assistant") c.messages[r.index] = answer;
      else if (c.messages.length === r.index) c.messages.push(answer);
    });
  }
  if (r.streamId) store.dropPending(r.streamId);
  if (r === state.run) state.run = null;
  following(placeRegenerate);
  renderSidebar();
  updateButtons();
}
