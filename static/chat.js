// Rill's chat page (the entry module): POST the conversation with fetch and read the
// Server-Sent Events body as it arrives; resume from the last event id when the connection
// drops, the tab hides or the page reloads. Several answers stream at once, one a
// conversation, and every tab of the browser shows the same conversations.
//   state.js       the page's elements and shared state     wording.js  what the page says
//   store.js       conversations in localStorage (turns)    migrate.js  its format before
//   tabs.js        tabs together: follow what is stored      render.js   turns and Markdown
//   transcript.js  the conversation on screen               sidebar.js  the conversation list
//   answer.js      an answer in flight, and how it settles  stream.js   its SSE connections
//   composer.js    ask, edit, regenerate, stop, retry       sse.js      the SSE parser
//   versions.js    edit a question, browse versions
//   tools.js       an answer's tool steps
import * as store from "./store.js";
import { abandonLost, regenerateLast, stop, wireComposer } from "./composer.js";
import { renderSidebar, setSidebar, wireSidebar } from "./sidebar.js";
import { state, ui, updateButtons } from "./state.js";
import { watchPageLifecycle } from "./stream.js";
import { cancelAll, open, watchTabs } from "./tabs.js";
import { showConversation, wireTranscript } from "./transcript.js";
import { startEdit, switchVersion } from "./versions.js";

function deleteConversation(id) {
  const run = state.runs.get(id);
  if (run) stop(run);
  cancelAll(id); // an answer another tab is writing
  store.remove(id);
  if (state.currentId === id) showConversation(null);
  else renderSidebar();
}

function startChat() {
  wireComposer();
  wireTranscript({ regenerate: regenerateLast, edit: startEdit, switchVersion });
  wireSidebar({ open, remove: deleteConversation });
  ui.newChat.addEventListener("click", () => {
    abandonLost();
    showConversation(null);
    setSidebar(false);
    ui.prompt.focus();
  });
  watchPageLifecycle();
  watchTabs();
  open(state.currentId);
  updateButtons();
  ui.prompt.focus();
}

if (ui.root) startChat();
