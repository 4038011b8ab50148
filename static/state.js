// The chat page's elements and the state its modules share: the conversation on screen and
// the answer in flight (one at a time), and the page furniture that shows them.
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
  run: null, // the answer in flight (one at a time)
  unloading: false,
};

export function setStatus(text, kind) {
  ui.statusLine.textContent = text;
  ui.statusLine.className = kind ? `status status-${kind}` : "status";
}

// Signed out while the page was open (the session ended): offer the way back in.
export function signInLink() {
  const link = document.createElement("a");
  link.href = ui.root.dataset.loginUrl;
  link.textContent = "Sign in";
  ui.statusLine.append(" ", link);
}

export function busy() {
  return Boolean(state.run) && state.run.phase !== "lost";
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
  const { run } = state;
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
