// What the chat page keeps in localStorage (an ES module).
// Keys are per signed-in user (rill.u.<user key>.*; the page's data-user-key, an opaque hash)
// or, with no sign-in, the plain names below. rill.user names whose keys are there: when the
// user changes, the other user's conversations are deleted from this browser.
//   rill.conversations  [{id, title, updated (ms), messages: [{role, content, model?, status?,
//                       note?, reasoning?, thoughtMs?}]}] newest first; status is "failed" or
//                       "stopped" for an unfinished answer (note: why it failed); reasoning is
//                       an answer's thinking, thoughtMs how long it took
//   rill.current        id of the conversation on screen
//   rill.pending        {[stream_id]: {conversation, index, streamId, lastId, source, reasoning,
//                        model, tokens, started, firstTokenAt, reasoningStarted,
//                        reasoningEnded, tab, seen}}: answers in flight (times in ms), so a
//                        reload resumes them
// Every change reads the stored value first, so two tabs do not undo each other's work.
const page = document.getElementById("chat");
const user = (page && page.dataset.userKey) || "";
const prefix = user ? `rill.u.${user}.` : "rill.";
export const KEYS = {
  conversations: `${prefix}conversations`, current: `${prefix}current`, pending: `${prefix}pending`,
};
const USER_KEY = "rill.user";
const TITLE_CHARS = 60;
const PENDING_MAX_AGE_MS = 15 * 60 * 1000; // past the server's stream TTL

function read(key, fallback) {
  try {
    const value = localStorage.getItem(key);
    return value === null ? fallback : JSON.parse(value);
  } catch (_) {
    return fallback; // storage off (privacy mode) or a corrupt value: start afresh
  }
}

function write(key, value) {
  try {
    if (value === null || value === undefined) localStorage.removeItem(key);
    else localStorage.setItem(key, JSON.stringify(value));
  } catch (_) { /* full or off: the page still works, it only forgets */ }
}

// Someone else signed in on this browser: their conversations are not this user's to see.
function forgetOtherUsers() {
  try {
    if (localStorage.getItem(USER_KEY) === user) return;
    const mine = new Set(Object.values(KEYS));
    for (let i = localStorage.length - 1; i >= 0; i -= 1) {
      const key = localStorage.key(i);
      if (key && key.startsWith("rill.") && !mine.has(key)) localStorage.removeItem(key);
    }
    localStorage.setItem(USER_KEY, user);
  } catch (_) { /* storage off: nothing kept, nothing to forget */ }
}
forgetOtherUsers();

export function newId() {
  const bytes = new Uint8Array(9);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function titleFrom(text) {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > TITLE_CHARS ? `${line.slice(0, TITLE_CHARS - 1).trimEnd()}…` : line;
}

export function list() {
  const items = read(KEYS.conversations, []);
  return Array.isArray(items) ? items.filter((c) => c && c.id && Array.isArray(c.messages)) : [];
}

export function get(id) {
  return list().find((c) => c.id === id) || null;
}

// Apply change(conversation) to the stored conversation with this id (created when
// missing), move it to the top, and store; returns it.
export function update(id, change) {
  const items = list();
  let conversation = items.find((c) => c.id === id);
  if (!conversation) {
    conversation = { id, title: "", updated: Date.now(), messages: [] };
    items.unshift(conversation);
  }
  change(conversation);
  if (!conversation.title) {
    const first = conversation.messages.find((m) => m.role === "user");
    if (first) conversation.title = titleFrom(first.content);
  }
  conversation.updated = Date.now();
  items.sort((a, b) => b.updated - a.updated);
  write(KEYS.conversations, items.filter((c) => c.messages.length));
  return conversation;
}

export function rename(id, title) {
  const items = list();
  const conversation = items.find((c) => c.id === id);
  if (conversation && title.trim()) {
    conversation.title = titleFrom(title);
    write(KEYS.conversations, items);
  }
}

export function remove(id) {
  write(KEYS.conversations, list().filter((c) => c.id !== id));
  const pending = read(KEYS.pending, {});
  for (const [key, record] of Object.entries(pending)) {
    if (record.conversation === id) delete pending[key];
  }
  write(KEYS.pending, pending);
}

function pendingAll() {
  const records = read(KEYS.pending, {});
  return records && typeof records === "object" ? records : {};
}

export function savePending(record) {
  const records = pendingAll();
  records[record.streamId] = { ...record, seen: Date.now() };
  write(KEYS.pending, records);
}

export function dropPending(streamId) {
  const records = pendingAll();
  if (!(streamId in records)) return;
  delete records[streamId];
  write(KEYS.pending, records);
}

// The answer in flight this tab should pick up after a reload: its own (sessionStorage
// survives a reload, not a new tab), or one nobody has touched for a while (a closed tab).
export function claimPending(tab, staleMs) {
  const now = Date.now();
  const records = pendingAll();
  let mine = null;
  for (const [key, record] of Object.entries(records)) {
    if (!record || now - (record.seen || 0) > PENDING_MAX_AGE_MS) delete records[key];
    else if (!mine && (record.tab === tab || now - record.seen > staleMs)) mine = record;
  }
  write(KEYS.pending, records);
  return mine;
}

export const current = () => read(KEYS.current, null);
export const setCurrent = (id) => write(KEYS.current, id);
