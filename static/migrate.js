// The conversations of the format before (one list under <prefix>conversations, and the
// answers in flight under <prefix>pending), converted once into turns (see store.js).
//   conversations  [{id, title, updated (ms), messages: [{role, content, model?, status?,
//                  note?, reasoning?, thoughtMs?}]}]
//   pending        {[stream_id]: {conversation, index, streamId, lastId, source, reasoning,
//                  model, tokens, started, firstTokenAt, reasoningStarted, reasoningEnded,
//                  tab, seen}}
// The old keys go once converted, so this runs at most once per browser and user.

// Each question and the answer after it share an exchange (pair), at the conversation's
// time plus the exchange's place, so the order survives.
function convert(conversation, pending, { putTurn, newId, write, prefix }) {
  const at = Number(conversation.updated) || Date.now();
  const messages = conversation.messages.filter((m) => m && typeof m.content === "string");
  const inFlight = pending.filter((p) => p.conversation === conversation.id);
  let pair = null;
  let n = 0;
  const add = (turn, index) => {
    if (turn.role === "user" || !pair) pair = newId();
    n = turn.role === "user" ? 0 : 1;
    putTurn({ ...turn, id: newId(), conversation: conversation.id, at: at + index,
              pair, n }, { create: true });
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
