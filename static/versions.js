// Edit a question sent, and browse the versions of a turn. Edit opens the question in a
// text box in its place (Save & send, Cancel; Enter sends, Escape cancels); sent, it is a new
// version of the question with a new answer, the turns after the old one kept on its branch.
// ‹ and › show another version of a turn, and the branch below it, in every tab.
import * as store from "./store.js";
import { element } from "./render.js";
import { sendEdit } from "./composer.js";
import { focusPrompt, notify, state, ui, writing } from "./state.js";
import { editing, redraw, showConversation, showVersion, stale } from "./transcript.js";
import { STILL_WRITING_VERSIONS } from "./wording.js";

// The turn <li> of stored turn id on screen, or null.
function itemOf(id) {
  return [...ui.transcript.children].find((item) => item.dataset.turn === id) || null;
}

// Give the focus to a button (class name) of turn id's <li>, else to the prompt.
function focusOn(id, name) {
  const target = itemOf(id) && itemOf(id).querySelector(`.${name}`);
  if (target && !target.disabled) target.focus();
  else focusPrompt();
}

// Open the editor of the question in item (text: what it starts with, the question's own
// by default).
export function startEdit(item, text) {
  if (item.classList.contains("editing")) return;
  const id = item.dataset.turn;
  const open = ui.transcript.querySelector(".editing");
  if (open) { // one editor at a time: the other one is cancelled (which may redraw)
    open.closeEditor(false);
    item = itemOf(id);
    if (!item) return;
  }
  const conversation = state.currentId;
  const stored = store.getTurn(conversation, id);
  const body = item.querySelector(".turn-text");
  const actions = item.querySelector(".turn-actions");
  const form = element("form", "edit-form");
  const input = element("textarea", "edit-input");
  input.value = text ?? (stored ? stored.content : body.textContent);
  input.rows = Math.min(8, input.value.split("\n").length + 1);
  input.setAttribute("aria-label", "Edit message");
  const save = element("button", "edit-save", "Save & send");
  save.type = "submit";
  const cancel = element("button", "edit-cancel", "Cancel");
  cancel.type = "button";
  const row = element("div", "edit-actions");
  row.append(cancel, save);
  form.append(input, row);
  // Closed: the transcript catches up with what changed meanwhile, and the focus goes to
  // the prompt after a send, or back to Edit.
  const close = (sent) => {
    delete item.closeEditor;
    form.remove();
    body.hidden = false;
    actions.hidden = false;
    item.classList.remove("editing");
    if (state.currentId === conversation) redraw();
    if (sent) focusPrompt();
    else focusOn(id, "edit-message");
  };
  const reopen = (edited) => {
    const again = state.currentId === conversation && itemOf(id);
    if (again) startEdit(again, edited);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const edited = input.value.trim();
    if (!edited) return;
    // Refused now, the editor stays open under the notice saying why; refused by the
    // server, it opens again with the text.
    if (sendEdit(conversation, id, edited, () => reopen(edited))) close(true);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation(); // Escape here leaves the editor, not the drawer
      close(false);
    }
  });
  input.addEventListener("input", () => { save.disabled = !input.value.trim(); });
  cancel.addEventListener("click", () => close(false));
  item.closeEditor = close;
  item.classList.add("editing");
  body.hidden = true;
  actions.hidden = true;
  body.after(form);
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

// Show the version step (-1 or +1) away of the turn in item, refused while an answer of the
// conversation is being written. The focus stays on the button pressed, or goes to the other
// one when it has reached the end.
export function switchVersion(item, step) {
  const id = state.currentId;
  const conversation = id ? store.get(id) : null;
  if (!conversation) return;
  const why = writing(id) ? STILL_WRITING_VERSIONS : "";
  notify(why);
  if (why) return;
  const message = conversation.messages.find((m) => m.id === item.dataset.turn);
  const index = message ? message.versions.indexOf(message.id) + step : -1;
  if (index < 0 || index >= message.versions.length) return;
  const pressed = step < 0 ? "version-prev" : "version-next";
  const other = step < 0 ? "version-next" : "version-prev";
  const chosen = message.versions[index];
  const inPlace = !stale() && !editing(); // the transcript shows the stored branch
  store.pick(id, message.parent, chosen);
  if (inPlace) showVersion(item);
  else showConversation(id);
  const box = itemOf(chosen) && itemOf(chosen).querySelector(".versions");
  if (!box) return;
  const target = box.querySelector(`.${pressed}`);
  if (!target.disabled) target.focus();
  else box.querySelector(`.${other}`).focus();
}
