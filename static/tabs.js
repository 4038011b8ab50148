// Tabs together: storage is the truth, and each tab follows it. Another tab's change (a
// `storage` event) redraws what it touched; an answer in flight shown here but written by
// another tab is read live from its stream (GET <api>/<stream id>/events, after the stored
// text); one nobody reads any more (its tab closed) is taken over; one settled elsewhere
// ends here as stored.
import * as store from "./store.js";
import { attachTurn, finish, newRun, settle } from "./answer.js";
import { refreshSidebar } from "./sidebar.js";
import { cancelOnServer, resume } from "./stream.js";
import { state, updateButtons } from "./state.js";
import { redraw, showConversation } from "./transcript.js";
import { NEVER_STARTED } from "./wording.js";

const STALE_MS = 20000; // an answer in flight nobody has stored progress of for this long
const SWEEP_MS = 5000;
let scheduled = 0;

// Read an answer in flight (a stored turn) here, from where its stored text ends; on screen,
// its turn takes the place of the stored one.
function follow(turn) {
  if (state.runs.has(turn.conversation) || !turn.streamId) return;
  const r = newRun(turn);
  attachTurn(r);
  if (turn.conversation === state.currentId) redraw();
  resume(r);
}

// Answers nobody reads any more: this tab's before a reload (sessionStorage keeps its id),
// or any whose tab went away. One that never got a stream id cannot be read: it failed.
function adoptOrphans() {
  const now = Date.now();
  for (const turn of store.streaming()) {
    const orphan = turn.tab === state.tab ? !state.runs.has(turn.conversation)
      : now - (turn.seen || turn.updated || 0) > STALE_MS;
    if (!orphan) continue;
    if (turn.streamId) {
      follow(turn);
    } else if (now - (turn.started || 0) > STALE_MS || turn.tab === state.tab) {
      const r = newRun(turn);
      attachTurn(r);
      finish(r, "failed", NEVER_STARTED);
    }
  }
}

// Open a conversation: show it, reading its answer in flight live if there is one.
export function open(id) {
  for (const turn of store.streaming()) {
    if (turn.conversation === id) follow(turn);
  }
  showConversation(id);
}

// Bring this tab up to what is stored.
export function refresh() {
  scheduled = 0;
  for (const r of [...state.runs.values()]) {
    const stored = store.getTurn(r.conversation, r.base.id);
    if (!stored || stored.status !== "streaming") settle(r, stored, null);
  }
  if (state.currentId && !store.get(state.currentId) && !state.runs.has(state.currentId)) {
    showConversation(null); // deleted in another tab
  } else {
    for (const turn of store.streaming()) {
      if (turn.conversation === state.currentId) follow(turn);
    }
    redraw();
  }
  refreshSidebar();
  updateButtons();
}

// Cancel every answer in flight of a conversation on the server, in whichever tab it began.
export function cancelAll(id) {
  for (const turn of store.streaming()) {
    if (turn.conversation === id) cancelOnServer(turn.streamId);
  }
}

export function watchTabs() {
  window.addEventListener("storage", (event) => {
    if (event.storageArea !== localStorage) return;
    if (event.key !== null && store.conversationOfKey(event.key) === undefined) return;
    if (event.key === store.KEYS.current) return; // each tab keeps its own on screen
    if (!scheduled) scheduled = setTimeout(refresh, 30);
  });
  adoptOrphans();
  setInterval(adoptOrphans, SWEEP_MS);
}
