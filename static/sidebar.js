// The sidebar: the stored conversations, newest first, to open, rename or delete; on narrow
// screens a drawer.
import * as store from "./store.js";
import { button, element } from "./render.js";
import { busy, state, ui } from "./state.js";
import { shortTime } from "./wording.js";

function conversationItem(conversation) {
  const { run } = state;
  const title = conversation.title || "Untitled";
  const item = element("li", "conversation");
  item.dataset.id = conversation.id;
  const open = element("button", "conversation-open");
  open.type = "button";
  open.append(element("span", "conversation-title", title),
              element("time", "conversation-time", shortTime(conversation.updated)));
  open.querySelector("time").dateTime = new Date(conversation.updated).toISOString();
  if (conversation.id === state.currentId) {
    item.classList.add("active");
    open.setAttribute("aria-current", "page");
  }
  if (run && run.conversation === conversation.id && busy()) item.classList.add("live");
  const actions = element("div", "conversation-actions");
  actions.append(button("conversation-rename", "✎", `Rename “${title}”`),
                 button("conversation-delete", "✕", `Delete “${title}”`));
  item.append(open, actions);
  return item;
}

export function renderSidebar() {
  const conversations = store.list();
  ui.sidebarList.replaceChildren(...conversations.map(conversationItem));
  ui.sidebarEmpty.hidden = conversations.length > 0;
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
  const finish = (save) => {
    if (done) return;
    done = true;
    if (save && input.value.trim()) store.rename(id, input.value);
    renderSidebar();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); finish(true); }
    else if (event.key === "Escape") { event.preventDefault(); finish(false); }
  });
  input.addEventListener("blur", () => finish(true));
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

export function setSidebar(open) {
  ui.app.classList.toggle("sidebar-open", open);
  if (ui.toggleSidebar) ui.toggleSidebar.setAttribute("aria-expanded", String(open));
  if (ui.backdrop) ui.backdrop.hidden = !open;
}

// The sidebar's buttons: open(id) shows a conversation, remove(id) deletes one (confirmed).
export function wireSidebar({ open, remove }) {
  ui.sidebarList.addEventListener("click", (event) => {
    const target = event.target.closest("button");
    const item = event.target.closest(".conversation");
    if (!target || !item) return;
    const id = item.dataset.id;
    if (target.classList.contains("conversation-open")) {
      open(id);
      setSidebar(false);
    } else if (target.classList.contains("conversation-rename")) {
      startRename(item);
    } else if (target.classList.contains("conversation-delete")) {
      askDelete(item);
    } else if (target.classList.contains("conversation-delete-confirm")) {
      remove(id);
    } else if (target.classList.contains("conversation-delete-cancel")) {
      renderSidebar();
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
  window.addEventListener("storage", (event) => {
    if (event.key === store.KEYS.conversations) renderSidebar();
  });
}
