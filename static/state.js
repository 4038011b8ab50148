// The chat page's elements and the state its modules share: the conversation on screen and
// the answers in flight (one a conversation, several at once), and the page furniture that
// shows them.
import * as store from "./store.js";
import * as render from "./render.js";

const $ = (id) => document.getElementById(id);

export const ui = {
  root: $("chat"),
  app: $("app") || document.body,
  transcript: $("transcript"),
  form: $("composer"),
  prompt: $("prompt"),
  sendButton: $("send"),
  stopButton: $("stop"),
  retryButton: $("retry"),
  statusLine: $("status"),
  notice: $("notice"),
  modelPicker: $("model"),
  emptyState: $("empty-state"),
  sidebar: $("conversations"),
  sidebarList: $("conversation-list"),
  sidebarEmpty: $("conversations-empty"),
  newChat: $("new-chat"),
  toggleSidebar: $("toggle-sidebar"),
  backdrop: $("sidebar-backdrop"),
  regenerate: render.button("regenerate", "Regenerate", "Regenerate this answer"),
};
ui.regenerate.id = "regenerate";

// Cookie-authenticated POSTs carry the CSRF token the page was rendered with.
const csrfMeta = document.querySelector('meta[name="csrf-token"]');
export const csrfHeaders = csrfMeta && csrfMeta.content ? { "X-CSRFToken": csrfMeta.content } : {};
export const apiUrl = ui.root ? ui.root.dataset.apiUrl : "";
// The most answers this browser may have in flight at once (RILL_MAX_STREAMS_PER_CLIENT, or
// the user's own limit); 0: no limit.
export const maxStreams = ui.root ? Number(ui.root.dataset.maxStreams) || 0 : 0;

// This tab's id: it survives a reload (sessionStorage), not a new tab.
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

export const state = {
  tab: tabId(),
  currentId: store.current(), // the conversation on screen
  runs: new Map(), // conversation id: the answer in flight this tab reads
  unloading: false,
};

// The answer in flight of the conversation on screen, or null.
export function currentRun() {
  return (state.currentId && state.runs.get(state.currentId)) || null;
}

export function setStatus(text, kind) {
  ui.statusLine.textContent = text;
  ui.statusLine.className = kind ? `status status-${kind}` : "status";
}

// An answer's status: kept with it, and shown while its conversation is on screen.
export function runStatus(r, text, kind) {
  r.status = [text, kind];
  if (r.conversation === state.currentId) setStatus(text, kind);
}

// A message about what the reader just tried (a send refused): seen, and announced, until
// the next try or another conversation.
export function notify(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = !text;
}

// Signed out while the page was open (the session ended): offer the way back in.
export function signInLink() {
  const link = document.createElement("a");
  link.href = ui.root.dataset.loginUrl;
  link.textContent = "Sign in";
  ui.statusLine.append(" ", link);
}

// The conversation on screen has an answer in flight (a lost one waits for Retry).
export function busy() {
  const run = currentRun();
  return Boolean(run) && run.phase !== "lost";
}

// An answer of conversation id is being written, in this tab or another.
export function writing(id) {
  return state.runs.has(id) || store.streaming().some((t) => t.conversation === id);
}

export function chosenModel() {
  return ui.modelPicker ? ui.modelPicker.value : null;
}

// Give the focus to the prompt (where a keyboard user goes on) without scrolling to it.
export function focusPrompt() {
  ui.prompt.focus({ preventScroll: true });
}

// Enable and show the controls for the state. One that had the focus and goes (Send while
// an answer streams, Stop when it ends, Retry once used) passes it to the prompt, not <body>.
export function updateButtons() {
  const run = currentRun();
  const focused = document.activeElement;
  ui.sendButton.disabled = busy() || !ui.prompt.value.trim();
  ui.stopButton.disabled = !run;
  ui.retryButton.hidden = !(run && run.phase === "lost");
  ui.regenerate.disabled = busy();
  ui.root.classList.toggle("streaming", busy());
  const controls = [ui.sendButton, ui.stopButton, ui.retryButton, ui.regenerate];
  if (controls.includes(focused) && (focused.disabled || focused.hidden || !focused.isConnected)) {
    focusPrompt();
  }
}
