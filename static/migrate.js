// The formats before, for store.js. Turns without a parent (before versions: {at, pair (its
// exchange's id), n (0 the question, 1 the answer)}) are read as one line; the conversations of
// the format before that (one list under <prefix>conversations, and the answers in flight
// under <prefix>pending) are converted once into turns.
//   conversations  [{id, title, updated (ms), messages: [{role, content, model?, status?,
//                  note?, reasoning?, thoughtMs?}]}]
//   pending        {[stream_id]: {conversation, index, streamId, lastId, source, reasoning,
//                  model, tokens, started, firstTokenAt, reasoningStarted, reasoningEnded,
//                  tab, seen}}
// The old keys go once converted, so this runs at most once per browser and user.

// The parent of each turn without one: the turn before it in the order (at, pair, n) of
// those turns. Returns Map(turn id: parent id, null for the first).
export function lineParents(turns) {
  const byPair = (a, b) => (a.pair < b.pair ? -1 : a.pair > b.pair ? 1 : 0);
  const line = turns.filter((t) => t.parent === undefined)
    .sort((a, b) => a.at - b.at || byPair(a, b) || (a.n || 0) - (b.n || 0));
  return new Map(line.map((t, index) => [t.id, index ? line[index - 1].id : null]));
}

// Each message follows the one before it, at the conversation's time plus its place.
function convert(conversation, pending, { putTurn, newId, write, prefix }) {
  const at = Number(conversation.updated) || Date.now();
  const messages = conversation.messages.filter((m) => m && typeof m.content === "string");
  const inFlight = pending.filter((p) => p.conversation === conversation.id);
  let parent = null;
  const add = (turn, index) => {
    const id = newId();
    putTurn({ ...turn, id, conversation: conversation.id, at: at + index, parent },
            { create: true });
    parent = id;
  };
  messages.forEach((m, index) => add({ ...m, role: m.role === "user" ? "user" : "assistant" },
                                     index));
  for (const p of inFlight) {
    if (p.index !== messages.length) continue; // an answer since stored, or gone
    add({ role: "assistant", content: p.source || "", model: p.model, status: "streaming",
          streamId: p.streamId, lastId: Number.isInteger(p.lastId) ? p.lastId : -1,
          reasoning: p.reasoning || "", tokens: p.tokens || 0, started: p.started,
          firstTokenAt: p.firstTokenAt || 0, reasoningStarted: p.reasoningStarted || 0,
          reasoningEnded: p.reasoningEnded || 0, tab: p.tab, seen: p.seen }, messages.length);
  }
  if (conversation.title) {
    write(`${prefix}conv.${conversation.id}`, { title: conversation.title, v: 1 });
  }
}

export function migrate(store) {
  const { prefix, read, write } = store;
  const old = read(`${prefix}conversations`, null);
  const pending = read(`${prefix}pending`, null);
  if (old === null && pending === null) return;
  const records = pending && typeof pending === "object" ? Object.values(pending) : [];
  if (Array.isArray(old)) {
    for (const conversation of old) {
      if (conversation && conversation.id && Array.isArray(conversation.messages)) {
        convert(conversation, records.filter(Boolean), store);
      }
    }
  }
  write(`${prefix}conversations`, null);
  write(`${prefix}pending`, null);
}
