// What the chat page keeps in localStorage, shared by every tab of this browser (an ES module).
// Keys are per signed-in user (rill.u.<user key>.*; the page's data-user-key, an opaque hash)
// or, with no sign-in, rill.*. rill.user names whose keys are there: when the user changes,
// the other user's conversations are deleted from this browser.
//   <prefix>turn.<conversation>.<turn>  one turn: {id, conversation, role, content, at (ms:
//       its exchange's time), pair (its exchange's id), n (0 the question, 1 the answer),
//       model?, status?, note?, reasoning?, thoughtMs?, tools? (an answer's tool steps, see
//       tools.js; absent: none), v (its version), updated (ms)}; status
//       "streaming" (then streamId, lastId, tokens, started, firstTokenAt, reasoningStarted,
//       reasoningEnded, tab, seen: the answer in flight, its text up to event lastId), or
//       "failed" (note: why) or "stopped" for an unfinished answer
//   <prefix>conv.<conversation>         {title?, deleted?, v}: a rename, or a deletion
//   <prefix>current                     id of the conversation last on screen (and in
//                                       sessionStorage, this tab's)
// A change writes one turn's key (an append, or that turn's next version), never the list:
// tabs writing at once cannot undo each other's turns. A conversation is its turns in order
// (at, pair, n). The format before (rill.conversations, one list) is converted once.
import { migrate } from "./migrate.js";

const page = document.getElementById("chat");
const user = (page && page.dataset.userKey) || "";
const prefix = user ? `rill.u.${user}.` : "rill.";
const TURN = `${prefix}turn.`;
const CONV = `${prefix}conv.`;
export const KEYS = { current: `${prefix}current` };
const USER_KEY = "rill.user";
const TITLE_CHARS = 60;

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

function keys(start) {
  const found = [];
  try {
    for (let i = 0; i < localStorage.length; i += 1) {
      const key = localStorage.key(i);
      if (key && key.startsWith(start)) found.push(key);
    }
  } catch (_) { /* storage off: nothing kept */ }
  return found;
}

// Someone else signed in on this browser: their conversations are not this user's to see.
function forgetOtherUsers() {
  try {
    if (localStorage.getItem(USER_KEY) === user) return;
    const mine = (key) => key.startsWith(prefix) && (user || !key.startsWith("rill.u."));
    // The keys first, then the removals: removing reorders the keys an index walks.
    for (const key of keys("rill.")) {
      if (key !== USER_KEY && !mine(key)) localStorage.removeItem(key);
    }
    localStorage.setItem(USER_KEY, user);
  } catch (_) { /* storage off: nothing kept, nothing to forget */ }
}

export function newId() {
  const bytes = new Uint8Array(9);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function titleFrom(text) {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > TITLE_CHARS ? `${line.slice(0, TITLE_CHARS - 1).trimEnd()}…` : line;
}

const turnKey = (conversation, id) => `${TURN}${conversation}.${id}`;
const order = (a, b) => a.at - b.at || (a.pair < b.pair ? -1 : a.pair > b.pair ? 1 : 0)
  || a.n - b.n;

function allTurns() {
  return keys(TURN).map((key) => read(key, null))
    .filter((t) => t && t.id && t.conversation && typeof t.role === "string");
}

function meta(id) {
  const value = read(`${CONV}${id}`, null);
  return value && typeof value === "object" ? value : {};
}

function conversationOf(id, turns) {
  const info = meta(id);
  if (info.deleted || !turns.length) return null;
  turns.sort(order);
  const first = turns.find((t) => t.role === "user");
  return {
    id, messages: turns, updated: Math.max(...turns.map((t) => t.at)),
    title: info.title || (first ? titleFrom(first.content) : ""),
  };
}

// The conversations, newest first: [{id, title, updated (ms), messages: [turn]}].
export function list() {
  const byId = new Map();
  for (const turn of allTurns()) {
    if (!byId.has(turn.conversation)) byId.set(turn.conversation, []);
    byId.get(turn.conversation).push(turn);
  }
  return [...byId].map(([id, turns]) => conversationOf(id, turns)).filter(Boolean)
    .sort((a, b) => b.updated - a.updated);
}

export function get(id) {
  if (!id) return null;
  const turns = keys(`${TURN}${id}.`).map((key) => read(key, null)).filter((t) => t && t.id);
  return conversationOf(id, turns);
}

export function getTurn(conversation, id) {
  return read(turnKey(conversation, id), null);
}

// Store the next version of a turn, unless what is stored already says more: a settled
// turn is final (the first settlement wins: an answer stopped in one tab stays stopped), and
// an answer in flight only moves forward (a higher lastId). create: the turn may be new (an
// update of a turn since removed, its conversation deleted, is dropped). Returns the turn
// as stored after, or null if there is none.
export function putTurn(turn, { create = false } = {}) {
  const key = turnKey(turn.conversation, turn.id);
  const stored = read(key, null);
  if (!stored && !create) return null;
  if (stored && stored.status !== "streaming") return stored;
  if (stored && turn.status === "streaming" && (stored.lastId ?? -1) > turn.lastId) return stored;
  const next = { ...turn, v: ((stored && stored.v) || 0) + 1, updated: Date.now() };
  write(key, next);
  return next;
}

export function removeTurn(conversation, id) {
  write(turnKey(conversation, id), null);
}

// A question and its answer (in flight, this tab's), appended to a conversation; returns
// {question, answer}.
export function addExchange(conversation, content, answer) {
  const at = Date.now();
  const pair = newId();
  const question = { id: newId(), conversation, role: "user", content, at, pair, n: 0 };
  putTurn(question, { create: true });
  const reply = putTurn({ ...answer, id: newId(), conversation, role: "assistant", content: "",
                          at, pair, n: 1, status: "streaming", lastId: -1 }, { create: true });
  return { question, answer: reply };
}

export function rename(id, title) {
  if (!title.trim()) return;
  const info = meta(id);
  write(`${CONV}${id}`, { ...info, title: titleFrom(title), v: (info.v || 0) + 1 });
}

// A deleted conversation keeps a tombstone, so a tab still writing its answer cannot bring it
// back.
export function remove(id) {
  for (const key of keys(`${TURN}${id}.`)) write(key, null);
  write(`${CONV}${id}`, { deleted: true, v: (meta(id).v || 0) + 1 });
}

// Every answer in flight, in any tab: [turn].
export function streaming() {
  return allTurns().filter((t) => t.status === "streaming" && !meta(t.conversation).deleted);
}

// The conversation a storage key belongs to (undefined for none of ours, null for "current").
export function conversationOfKey(key) {
  if (!key) return undefined;
  if (key === KEYS.current) return null;
  for (const start of [TURN, CONV]) {
    if (key.startsWith(start)) return key.slice(start.length).split(".")[0];
  }
  return undefined;
}

// The conversation on screen: this tab's (it survives a reload), else the last one opened.
export function current() {
  try {
    const mine = sessionStorage.getItem(KEYS.current);
    if (mine !== null) return JSON.parse(mine);
  } catch (_) { /* storage off */ }
  return read(KEYS.current, null);
}

export function setCurrent(id) {
  write(KEYS.current, id);
  try {
    sessionStorage.setItem(KEYS.current, JSON.stringify(id));
  } catch (_) { /* storage off: only this page remembers */ }
}

forgetOtherUsers();
migrate({ prefix, read, write, putTurn, newId });
