// The sidebar: the stored conversations, newest first, to open, rename or delete; on narrow
// screens a drawer.
import * as store from "./store.js";
import { button, element } from "./render.js";
import { focusPrompt, state, ui } from "./state.js";
import { shortTime } from "./wording.js";

// live: its answer is being written (in any tab), which the list says in words too.
function conversationItem(conversation, live) {
  const title = conversation.title || "Untitled";
  const item = element("li", "conversation");
  item.dataset.id = conversation.id;
  const open = element("button", "conversation-open");
  open.type = "button";
  open.append(element("span", "conversation-title", title));
  if (live) {
    item.classList.add("live");
    open.append(element("span", "conversation-live", "Generating"));
  }
  open.append(element("time", "conversation-time", shortTime(conversation.updated)));
  open.querySelector("time").dateTime = new Date(conversation.updated).toISOString();
  if (conversation.id === state.currentId) {
    item.classList.add("active");
    open.setAttribute("aria-current", "page");
  }
  const actions = element("div", "conversation-actions");
  actions.append(button("conversation-rename", "✎", `Rename “${title}”`),
                 button("conversation-delete", "✕", `Delete “${title}”`));
  item.append(open, actions);
  return item;
}

// The buttons of a conversation in the list, which keep the focus across a re-render.
const CONTROLS = ["conversation-open", "conversation-rename", "conversation-delete"];

// {id, control}: the conversation and the class of its button that has the focus, or null.
function focusedControl() {
  const active = document.activeElement;
  const item = active && ui.sidebarList.contains(active) ? active.closest(".conversation") : null;
  const control = item && CONTROLS.find((name) => active.classList.contains(name));
  return control ? { id: item.dataset.id, control } : null;
}

// Focus a button (class control) of the conversation id; false if it is not in the list.
function focusControl(id, control) {
  const item = [...ui.sidebarList.children].find((li) => li.dataset.id === id);
  const target = item && item.querySelector(`.${control}`);
  if (target) target.focus();
  return Boolean(target);
}

// Draw the list anew; the focus stays on the same button of the same conversation, or goes
// to focus = {id, control}.
export function renderSidebar(focus = focusedControl()) {
  const conversations = store.list();
  const live = liveSet();
  ui.sidebarList.replaceChildren(...conversations.map((c) => conversationItem(c, live.has(c.id))));
  ui.sidebarList.dataset.shown = signature(conversations, live);
  ui.sidebarEmpty.hidden = conversations.length > 0;
  if (focus) focusControl(focus.id, focus.control);
}

// The conversations whose answer is being written, in any tab.
function liveSet() {
  const live = new Set(store.streaming().map((t) => t.conversation));
  for (const id of state.runs.keys()) live.add(id);
  return live;
}

function signature(conversations, live) {
  return JSON.stringify([state.currentId, ...conversations.map((c) => [
    c.id, c.title, shortTime(c.updated), live.has(c.id)])]);
}

// Draw the list anew if another tab changed what it shows, unless a title is being edited or
// a delete confirmed there.
export function refreshSidebar() {
  if (ui.sidebarList.querySelector(".renaming, .confirming")) return;
  const conversations = store.list();
  const live = liveSet();
  if (ui.sidebarList.dataset.shown !== signature(conversations, live)) renderSidebar();
}

function startRename(item) {
  const id = item.dataset.id;
  const conversation = store.get(id);
  if (!conversation) return;
  const input = element("input", "conversation-rename-input");
  input.type = "text";
  input.value = conversation.title;
  input.maxLength = 120;
  input.setAttribute("aria-label", "Conversation title");
  let done = false;
  // Enter or Escape gives the focus back to the Rename button; leaving the field keeps it
  // where it went.
  const finish = (save, focus) => {
    if (done) return;
    done = true;
    if (save && input.value.trim()) store.rename(id, input.value);
    renderSidebar(focus ? { id, control: "conversation-rename" } : undefined);
  };
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== "Escape") return;
    event.preventDefault();
    event.stopPropagation(); // Escape here leaves the field, not the drawer
    finish(event.key === "Enter", true);
  });
  input.addEventListener("blur", () => finish(true, false));
  item.classList.add("renaming");
  item.replaceChildren(input);
  input.focus();
  input.select();
}

function askDelete(item) {
  const confirmBox = element("div", "conversation-confirm");
  confirmBox.append(element("span", "conversation-confirm-text", "Delete?"),
                    button("conversation-delete-confirm", "Delete"),
                    button("conversation-delete-cancel", "Cancel"));
  item.classList.add("confirming");
  item.querySelector(".conversation-actions").replaceWith(confirmBox);
  confirmBox.querySelector(".conversation-delete-cancel").focus();
}

// Open or close the drawer (narrow screens). Closing it with the focus inside gives the
// focus to the button that opens it.
export function setSidebar(open) {
  const closing = !open && ui.app.classList.contains("sidebar-open");
  ui.app.classList.toggle("sidebar-open", open);
  if (ui.toggleSidebar) ui.toggleSidebar.setAttribute("aria-expanded", String(open));
  if (ui.backdrop) ui.backdrop.hidden = !open;
  if (closing && ui.toggleSidebar && ui.sidebar.contains(document.activeElement)) {
    ui.toggleSidebar.focus();
  }
}

// The sidebar's buttons: open(id) shows a conversation, remove(id) deletes one (confirmed).
export function wireSidebar({ open, remove }) {
  ui.sidebarList.addEventListener("click", (event) => {
    const target = event.target.closest("button");
    const item = event.target.closest(".conversation");
    if (!target || !item) return;
    const id = item.dataset.id;
    if (target.classList.contains("conversation-open")) {
      const drawer = ui.app.classList.contains("sidebar-open");
      open(id);
      setSidebar(false);
      if (drawer) focusPrompt(); // the drawer closed over the conversation: go on there
    } else if (target.classList.contains("conversation-rename")) {
      startRename(item);
    } else if (target.classList.contains("conversation-delete")) {
      askDelete(item);
    } else if (target.classList.contains("conversation-delete-confirm")) {
      // The focus goes to the next conversation down (or up, from the last), or New chat.
      const neighbour = item.nextElementSibling || item.previousElementSibling;
      remove(id);
      if (!neighbour || !focusControl(neighbour.dataset.id, "conversation-open")) {
        ui.newChat.focus();
      }
    } else if (target.classList.contains("conversation-delete-cancel")) {
      renderSidebar({ id, control: "conversation-delete" });
    }
  });
  if (ui.toggleSidebar) {
    ui.toggleSidebar.addEventListener("click", () => {
      setSidebar(!ui.app.classList.contains("sidebar-open"));
    });
  }
  if (ui.backdrop) ui.backdrop.addEventListener("click", () => setSidebar(false));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && ui.app.classList.contains("sidebar-open")) setSidebar(false);
  });
}
