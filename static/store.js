// What the chat page keeps in localStorage, shared by every tab of this browser (an ES module).
// Keys are per signed-in user (rill.u.<user key>.*; the page's data-user-key, an opaque hash)
// or, with no sign-in, rill.*. rill.user names whose keys are there: when the user changes,
// the other user's conversations are deleted from this browser.
//   <prefix>turn.<conversation>.<turn>  one turn: {id, conversation, role, content, at (ms:
//       when it was asked), parent (the id of the turn before it in its branch; null for a
//       first question), model?, status?, note?, reasoning?, thoughtMs?, tools? (an
//       answer's tool steps, see tools.js; absent: none), v (its stored version), updated
//       (ms)}; status
//       "streaming" (then streamId, lastId, tokens, started, firstTokenAt, reasoningStarted,
//       reasoningEnded, tab, seen: the answer in flight, its text up to event lastId), or
//       "failed" (note: why) or "stopped" for an unfinished answer
//   <prefix>conv.<conversation>         {title?, deleted?, v}: a rename, or a deletion
//   <prefix>pick.<conversation>.<parent> {child, at (ms)}: the version of the turn after
//                                       parent ("root": the first question) on screen
//   <prefix>current                     id of the conversation last on screen (and in
//                                       sessionStorage, this tab's)
// A change writes one turn's key (an append, or that turn's next version), never the list:
// tabs writing at once cannot undo each other's turns. A conversation is a tree of turns:
// turns with the same parent are versions of one turn (an edited question, a regenerated
// answer), oldest first; the branch on screen, and sent upstream, follows from the root each
// turn's picked version, else its newest. A pick is the last one written, in any tab. The
// formats before (rill.conversations, one list; turns without a parent, one line) are read
// as one branch (migrate.js).
import { lineParents, migrate } from "./migrate.js";

const page = document.getElementById("chat");
const user = (page && page.dataset.userKey) || "";
const prefix = user ? `rill.u.${user}.` : "rill.";
const TURN = `${prefix}turn.`;
const CONV = `${prefix}conv.`;
const PICK = `${prefix}pick.`;
const ROOT = "root"; // where a conversation's first questions hang
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
const pickKey = (conversation, parent) => `${PICK}${conversation}.${parent || ROOT}`;
const byAge = (a, b) => a.at - b.at || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

function allTurns() {
  return keys(TURN).map((key) => read(key, null))
    .filter((t) => t && t.id && t.conversation && typeof t.role === "string");
}

function turnsOf(id) {
  return keys(`${TURN}${id}.`).map((key) => read(key, null)).filter((t) => t && t.id);
}

// {conversation: {parent id or "root": picked child id}}, for one conversation or all.
function picks(id = "") {
  const found = {};
  for (const key of keys(`${PICK}${id}`)) {
    const [conversation, parent] = key.slice(PICK.length).split(".");
    const value = read(key, null);
    if (value && value.child) (found[conversation] ||= {})[parent] = value.child;
  }
  return found;
}

function meta(id) {
  const value = read(`${CONV}${id}`, null);
  return value && typeof value === "object" ? value : {};
}

// parentOf(turn): the id of the turn before it (null: none), for turns of one conversation.
function parents(turns) {
  const line = lineParents(turns);
  return (turn) => (turn.parent === undefined ? line.get(turn.id) ?? null : turn.parent);
}

// The branch on screen: from the root, each turn's picked version (else its newest), as
// copies with parent (the id before, null for the first) and versions (the ids of its
// versions, oldest first, itself among them).
function branchOf(turns, picked) {
  const parentOf = parents(turns);
  const children = new Map();
  for (const turn of turns) {
    const key = parentOf(turn) || ROOT;
    if (!children.has(key)) children.set(key, []);
    children.get(key).push(turn);
  }
  const branch = [];
  const seen = new Set();
  for (let key = ROOT, parent = null; children.has(key);) {
    const versions = children.get(key).sort(byAge);
    const chosen = versions.find((t) => t.id === picked[key]) || versions[versions.length - 1];
    if (seen.has(chosen.id)) break; // a loop in a corrupt store
    seen.add(chosen.id);
    branch.push({ ...chosen, parent, versions: versions.map((t) => t.id) });
    parent = chosen.id;
    key = chosen.id;
  }
  return branch;
}

// {id, title, updated (ms), messages: the branch on screen}, or null (none, or deleted).
function conversationOf(id, turns, picked) {
  const info = meta(id);
  if (info.deleted || !turns.length) return null;
  const messages = branchOf(turns, picked || {});
  const first = messages.find((t) => t.role === "user");
  return {
    id, messages, updated: Math.max(...turns.map((t) => t.at)),
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
  const picked = picks();
  return [...byId].map(([id, turns]) => conversationOf(id, turns, picked[id])).filter(Boolean)
    .sort((a, b) => b.updated - a.updated);
}

export function get(id) {
  if (!id) return null;
  return conversationOf(id, turnsOf(id), picks(`${id}.`)[id]);
}

// The turns from the first question down to turn id, by their parents: what was on screen
// above it, and what goes upstream with it.
export function path(conversation, id) {
  const turns = turnsOf(conversation);
  const byId = new Map(turns.map((t) => [t.id, t]));
  const parentOf = parents(turns);
  const found = [];
  for (let turn = byId.get(id); turn && found.length < turns.length;) {
    found.unshift(turn);
    turn = byId.get(parentOf(turn));
  }
  return found;
}

// The version on screen after parent (null: the first question), or null for the newest.
export function picked(conversation, parent) {
  const value = read(pickKey(conversation, parent), null);
  return (value && value.child) || null;
}

// Show version child after parent (null: the newest again), in every tab.
export function pick(conversation, parent, child) {
  write(pickKey(conversation, parent), child ? { child, at: Date.now() } : null);
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

// An answer in flight (this tab's; answer: its model, started, tab, seen) after turn parent;
// returns it as stored.
export function addAnswer(conversation, parent, answer) {
  return putTurn({ ...answer, id: newId(), conversation, role: "assistant", content: "",
                   at: Date.now(), parent, status: "streaming", lastId: -1 }, { create: true });
}

// A question after turn parent (null: a first question) and its answer in flight; returns
// {question, answer}.
export function addExchange(conversation, content, answer, parent) {
  const question = { id: newId(), conversation, role: "user", content, at: Date.now(),
                     parent };
  putTurn(question, { create: true });
  return { question, answer: addAnswer(conversation, question.id, answer) };
}

export function rename(id, title) {
  if (!title.trim()) return;
  const info = meta(id);
  write(`${CONV}${id}`, { ...info, title: titleFrom(title), v: (info.v || 0) + 1 });
}

// A deleted conversation keeps a tombstone, so a tab still writing its answer cannot bring it
// back.
export function remove(id) {
  for (const key of [...keys(`${TURN}${id}.`), ...keys(`${PICK}${id}.`)]) write(key, null);
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
  for (const start of [TURN, CONV, PICK]) {
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
