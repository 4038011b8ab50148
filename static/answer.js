// An answer in flight (a "run"): its turn on screen, painted from its Markdown source once per
// frame, its progress stored for a reload and for the other tabs, and how it settles into its
// conversation. Several runs go at once, one a conversation (state.runs).
import * as store from "./store.js";
import * as render from "./render.js";
import { renderSidebar } from "./sidebar.js";
import { notify, runStatus, signInLink, state, ui, updateButtons } from "./state.js";
import { paintAnswer } from "./tools.js";
import { following, markShown, noteOn, placeRegenerate, scrollToEnd, showConversation,
         showTurn } from "./transcript.js";
import { doneText, progressText, refusalText } from "./wording.js";

const SAVE_EVERY_MS = 250;

// The run of a stored answer turn (in flight: status "streaming"), from where the turn's
// stored text ends (lastId, content); stream.js reads on after lastId.
export function newRun(turn) {
  return {
    turn: null, base: { // pair and n: an answer stored before versions (see migrate.js)
      id: turn.id, conversation: turn.conversation, role: "assistant", at: turn.at,
      parent: turn.parent, pair: turn.pair, n: turn.n,
    },
    conversation: turn.conversation, model: turn.model, streamId: turn.streamId || null,
    lastId: Number.isInteger(turn.lastId) ? turn.lastId : -1, source: turn.content || "",
    reasoning: turn.reasoning || "", tokens: turn.tokens || 0,
    tools: Array.isArray(turn.tools) ? turn.tools : [], // its tool steps (tools.js)
    started: turn.started || Date.now(), firstTokenAt: turn.firstTokenAt || 0,
    reasoningStarted: turn.reasoningStarted || (turn.reasoning ? turn.started : 0),
    reasoningEnded: turn.reasoningEnded || 0, outcome: null, payload: null,
    controller: null, attempts: 0, timer: 0, hiddenTimer: 0, frame: 0, savedAt: 0,
    phase: "connecting", shutdown: null, retryAfterMs: 0, question: null, unpick: null,
    refusedThen: null, finished: false, status: ["", ""],
  };
}

// The reasoning ends with the first text of the answer, or with the answer.
export function endReasoning(r) {
  if (r.reasoningStarted && !r.reasoningEnded) r.reasoningEnded = Date.now();
}

function thoughtMs(r) {
  return r.reasoningEnded ? r.reasoningEnded - r.reasoningStarted : null;
}

// Make the run's turn and count it in. It is shown at once when its conversation is on
// screen and ends with its question; else the next showConversation shows it.
export function attachTurn(r) {
  state.runs.set(r.conversation, r);
  r.turn = render.createTurn("assistant", "", r.model);
  paintAnswer(r.turn, r.source, r.tools, true);
  r.turn.item.setAttribute("aria-busy", "true");
  r.turn.item.dataset.turn = r.base.id;
  const last = ui.transcript.lastElementChild;
  if (r.conversation === state.currentId && last && last.dataset.turn === r.base.parent) {
    showTurn(r.turn, r.base.id);
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
  const draw = () => {
    paintAnswer(r.turn, r.source, r.tools, true);
    paintThinking(r);
  };
  if (r.conversation === state.currentId) following(draw);
  else draw(); // off screen: nothing to scroll
  if (!r.outcome && r.phase === "streaming") runStatus(r, progressText(r), "busy");
  saveProgress(r, false);
}

// The stream id, the last event id and the text up to it are stored together, so a
// reload, or another tab, reads on exactly after what it shows. Never past the last event
// (done or error): a reader resuming after it would get nothing more (204) and wait for an
// end it had already missed; the answer is stored settled instead. Another tab may have
// settled the answer, or the conversation gone: then this run lets go and shows what is
// stored.
export function saveProgress(r, force) {
  if (!r.streamId || r.finished || r.outcome) return;
  const now = Date.now();
  if (!force && now - r.savedAt < SAVE_EVERY_MS) return;
  r.savedAt = now;
  const stored = store.putTurn({
    ...r.base, content: r.source, model: r.model, status: "streaming", streamId: r.streamId,
    lastId: r.lastId, reasoning: r.reasoning, tokens: r.tokens, started: r.started,
    tools: r.tools.length ? r.tools : undefined,
    firstTokenAt: r.firstTokenAt, reasoningStarted: r.reasoningStarted,
    reasoningEnded: r.reasoningEnded, tab: state.tab, seen: now,
  });
  if (!stored || stored.status !== "streaming") settle(r, stored, null);
}

// Refused before streaming: the answer (and its question) leave the conversation. A new
// version gives the screen back to the one before (r.unpick: {parent, child}), then
// r.refusedThen() runs (an edit reopens); a question asked goes back into the composer.
export async function refused(r, response) {
  r.finished = true;
  const message = await refusalText(response);
  const here = r.conversation === state.currentId;
  r.turn.item.remove();
  store.removeTurn(r.conversation, r.base.id);
  if (r.question) store.removeTurn(r.conversation, r.question.id);
  if (r.unpick) {
    store.pick(r.conversation, r.unpick.parent, r.unpick.child);
    if (here) showConversation(r.conversation);
    if (r.refusedThen) r.refusedThen();
  } else if (r.question) {
    if (r.question.view) r.question.view.item.classList.add("unsent");
    if (here && !ui.prompt.value.trim()) ui.prompt.value = r.question.content;
  }
  release(r);
  if (here) {
    runStatus(r, message, "error");
    if (response.status === 401 && ui.root.dataset.loginUrl) signInLink();
  } else {
    notify(message);
  }
}

// The run is over. (A refusal said above the composer stays until the next send, or another
// conversation: one cleared here could vanish before it is read.)
function release(r) {
  if (state.runs.get(r.conversation) === r) state.runs.delete(r.conversation);
  if (r.conversation === state.currentId) {
    following(placeRegenerate);
    markShown();
  }
  renderSidebar();
  updateButtons();
}

// Settle the answer: say how it ended and keep it in its conversation. status is "stopped"
// or "failed" (with note, its message) when it did not end with a done or error event.
export function finish(r, status, note) {
  if (r.finished) return;
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
  const answer = { ...r.base, content: r.source, model: r.model };
  if (r.tools.length) answer.tools = r.tools;
  if (status) answer.status = status;
  if (status === "failed") answer.note = message;
  if (r.reasoning) Object.assign(answer, { reasoning: r.reasoning, thoughtMs: thoughtMs(r) });
  const stored = store.putTurn(answer);
  const ours = stored && stored.content === answer.content
    && (stored.status || "") === (answer.status || "");
  settle(r, stored, ours ? [message, kind] : null);
}

// What a settled answer says on the status line when another tab settled it.
function storedStatus(turn) {
  if (turn.status === "stopped") return ["Stopped.", ""];
  if (turn.status === "failed") return [turn.note || "The answer failed.", "error"];
  return ["Done.", "done"];
}

// The run ends with the answer as stored (the first settlement wins, in whichever tab;
// none: its conversation was deleted); said: [message, kind] when this tab settled it.
export function settle(r, stored, said) {
  if (r.finished) return;
  r.finished = true;
  clearTimeout(r.timer);
  clearTimeout(r.hiddenTimer);
  if (r.frame) cancelAnimationFrame(r.frame);
  if (r.controller) r.controller.abort("finished");
  r.controller = null;
  if (stored) {
    r.source = stored.content;
    if (!said) said = storedStatus(stored);
    const update = () => {
      paintAnswer(r.turn, r.source, stored.tools, false);
      render.setThinking(r.turn, stored.reasoning || "", stored.thoughtMs);
      r.turn.item.removeAttribute("aria-busy");
      if (stored.status) r.turn.item.classList.add(stored.status);
      if (stored.status === "failed") noteOn(r.turn.item, stored.note || said[0]);
    };
    if (r.conversation === state.currentId) following(update);
    else update();
    runStatus(r, said[0], said[1]);
  } else {
    r.turn.item.remove();
  }
  release(r);
}
