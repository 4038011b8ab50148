// The transcript: the turns of the conversation on screen (the branch shown, each turn with
// its versions), following the answer as it grows, and the buttons on its turns.
import * as store from "./store.js";
import * as render from "./render.js";
import { renderSidebar } from "./sidebar.js";
import { currentRun, focusPrompt, notify, setStatus, state, ui, updateButtons } from "./state.js";
import { paintAnswer } from "./tools.js";

// Follow the answer as it grows while the reader is at the bottom. Scrolling up stops that
// and, while an answer streams below the fold, shows "Jump to latest"; scrolling back to the
// bottom, pressing the button or sending resumes it.
const jump = document.getElementById("jump-latest");
let follow = true;
let lastY = window.scrollY;

function gapBelow() {
  const page = document.documentElement;
  return page.scrollHeight - window.innerHeight - window.scrollY;
}

// Read the reader's intent from where the page scrolled since last time. A page that got
// shorter is clamped to its very bottom: that is no scroll up.
function noteScroll() {
  const gap = gapBelow();
  if (window.scrollY < lastY && gap > 2) follow = false;
  else if (gap <= 48) follow = true;
  lastY = window.scrollY;
  if (!jump) return;
  const hide = follow || !ui.transcript.querySelector(".turn[aria-busy='true']");
  if (hide && document.activeElement === jump) focusPrompt();  // not <body>
  jump.hidden = hide;
}

export function scrollToEnd() {
  window.scrollTo({ top: document.documentElement.scrollHeight });
  follow = true;
  noteScroll();
}

// Grow the transcript with grow(), and keep its end in view if the reader follows it.
export function following(grow) {
  noteScroll();
  grow();
  if (follow) scrollToEnd();
  else noteScroll();
}

// Scroll events and the "Jump to latest" button (which gives the focus to the prompt, the
// next place to go, as it hides).
function wireFollowing() {
  window.addEventListener("scroll", noteScroll, { passive: true });
  if (!jump) return;
  jump.addEventListener("click", () => {
    scrollToEnd();
    focusPrompt();
  });
}

// Show a turn (its stored id) at the end of the transcript.
export function showTurn(turn, id) {
  turn.item.dataset.turn = id;
  ui.transcript.append(turn.item);
  ui.emptyState.hidden = true;
}

export function noteOn(item, text) {
  let note = item.querySelector(".turn-note");
  if (!note) {
    note = render.element("p", "turn-note");
    item.append(note);
  }
  note.textContent = text;
}

// Regenerate sits on the last answer of the conversation on screen, when it is settled.
export function placeRegenerate() {
  const run = currentRun();
  const last = ui.transcript.lastElementChild;
  const settled = last && last.dataset.role === "assistant"
    && !(run && run.turn && run.turn.item === last);
  if (settled) last.querySelector(".turn-actions").append(ui.regenerate);
  else ui.regenerate.remove();
}

// What of a conversation the transcript shows: its turns, how many versions each has, and
// each settled one's text.
function signature(conversation) {
  if (!conversation) return "";
  return conversation.messages.map((m) => (m.status === "streaming"
    ? `${m.id}/${m.versions.length}~`
    : `${m.id}/${m.versions.length}:${m.status || ""}:${m.content.length}:`
      + `${m.reasoning ? m.reasoning.length : 0}`)).join(",");
}

// The transcript is out of date: another tab changed the conversation on screen, or the
// answer this tab reads there, on the branch shown, is not on screen yet.
export function stale() {
  const conversation = store.get(state.currentId);
  const run = currentRun();
  const unshown = run && run.turn && !run.turn.item.isConnected && conversation
    && conversation.messages.some((m) => m.id === run.base.id);
  return ui.transcript.dataset.shown !== signature(conversation) || Boolean(unshown);
}

// A question is being edited on screen (drawing the transcript anew would lose it).
export function editing() {
  return Boolean(ui.transcript.querySelector(".editing"));
}

// Bring the transcript up to what is stored, unless a question is being edited there (its
// editor does when it closes).
export function redraw() {
  if (stale() && !editing()) showConversation(state.currentId);
}

// A stored turn's view: its text, model, how it ended, its reasoning, its versions. The
// answer this tab reads is its run's turn.
function viewOf(message, run) {
  const turn = run && run.base.id === message.id ? run.turn
    : render.createTurn(message.role, message.content, message.model);
  if (turn !== (run && run.turn)) {
    if (message.tools) paintAnswer(turn, message.content, message.tools,
                                   message.status === "streaming");
    if (message.status === "streaming") turn.item.setAttribute("aria-busy", "true");
    else if (message.status) turn.item.classList.add(message.status);
    if (message.note) noteOn(turn.item, message.note);
    if (message.reasoning) render.setThinking(turn, message.reasoning, message.thoughtMs);
  }
  turn.item.dataset.turn = message.id;
  render.setVersions(turn, message.versions.indexOf(message.id) + 1, message.versions.length);
  return turn;
}

// After what the transcript shows changed here: its controls, and what it was drawn from.
function shown(conversation) {
  ui.transcript.dataset.shown = signature(conversation);
  ui.emptyState.hidden = ui.transcript.children.length > 0;
  placeRegenerate();
  updateButtons();
}

// Show a stored conversation (or none: a new chat), with its answer in flight if this tab
// reads it.
export function showConversation(id) {
  const conversation = id ? store.get(id) : null;
  if (state.currentId !== (conversation ? conversation.id : null)) notify("");
  state.currentId = conversation ? conversation.id : null;
  store.setCurrent(state.currentId);
  const run = currentRun();
  ui.transcript.replaceChildren();
  for (const message of conversation ? conversation.messages : []) {
    showTurn(viewOf(message, run), message.id);
  }
  setStatus(...(run ? run.status : ["", ""]));
  renderSidebar();
  shown(conversation);
  scrollToEnd();
}

// The version on screen of the turn item changed (item shows a turn of the stored branch):
// item shows the new one in place, and the turns after it are drawn anew.
export function showVersion(item) {
  const conversation = store.get(state.currentId);
  const at = [...ui.transcript.children].indexOf(item);
  const message = conversation && conversation.messages[at];
  if (!message || message.versions.indexOf(item.dataset.turn) < 0
      || !item.querySelector(".versions")) {
    showConversation(state.currentId);
    return;
  }
  while (item.nextElementSibling) item.nextElementSibling.remove();
  const turn = viewOf(message, null);
  render.replaceTurn(item, turn, message.versions.indexOf(message.id) + 1,
                     message.versions.length);
  for (const later of conversation.messages.slice(at + 1)) {
    showTurn(viewOf(later, currentRun()), later.id);
  }
  shown(conversation);
}

// The transcript shows the conversation as stored now (after this tab changed it).
export function markShown() {
  ui.transcript.dataset.shown = signature(store.get(state.currentId));
}

// The Markdown source of an answer on screen: the one in flight, or as stored.
function sourceOf(item) {
  const run = currentRun();
  if (run && run.turn && run.turn.item === item) return run.source;
  const turn = store.getTurn(state.currentId, item.dataset.turn);
  return turn ? turn.content : item.querySelector(".turn-text").textContent;
}

// Clicks on the transcript's buttons: regenerate() for Regenerate, edit(item) for a
// question's Edit, switchVersion(item, step) for ‹ (step -1) and › (+1).
export function wireTranscript({ regenerate, edit, switchVersion }) {
  wireFollowing();
  ui.transcript.addEventListener("click", (event) => {
    const target = event.target.closest("button");
    if (!target) return;
    const item = target.closest(".turn");
    if (target === ui.regenerate) {
      regenerate();
    } else if (target.classList.contains("edit-message") && item) {
      edit(item);
    } else if (target.classList.contains("version-prev") && item) {
      switchVersion(item, -1);
    } else if (target.classList.contains("version-next") && item) {
      switchVersion(item, 1);
    } else if (target.classList.contains("copy-code")) {
      const code = target.closest(".code-block").querySelector("pre");
      render.copyWithFeedback(target, code ? code.textContent : "");
    } else if (target.classList.contains("copy-answer") && item) {
      render.copyWithFeedback(target, sourceOf(item));
    }
  });
}
