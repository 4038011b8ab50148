// Tool steps (issue 17): each tool call of an answer and its result, a collapsible line in the
// answer where it happened, between the parts of its text. A tool's name, arguments and
// result are shown as text only (textContent), never as HTML.
//
// A step, as a run keeps it and its stored turn has it (the turn's `tools`; none: absent):
//   {id, name, index (its tool_call index), arguments (its JSON text so far), offset (the
//    length of the answer's text when the call began: where it sits), and once its result
//    came, ok, content, elapsedMs}
// The answer's text stays one Markdown source (the turn's `content`, as without tools); the
// offsets cut it into parts, each rendered as Markdown on its own: the text before a step is
// a model message of its own, ended by the call, so no Markdown runs across a step.
import { element, markdownNodes, renderMarkdown, scrollable } from "./render.js";
import { secondsText } from "./wording.js";

// A call's first tool_call event has its id and name; later ones (id null) carry more of
// the arguments of the call at their index in the current model step.
export function onToolCall(r, payload) {
  const index = Number.isInteger(payload.index) ? payload.index : 0;
  const text = typeof payload.arguments === "string" ? payload.arguments : "";
  let step = payload.id ? r.tools.find((s) => s.id === payload.id) : null;
  if (!step && !payload.id) step = r.tools.findLast((s) => s.index === index);
  if (!step) {
    step = { id: payload.id || `call-${r.tools.length}`, name: String(payload.name || "tool"),
             index, arguments: "", offset: r.source.length };
    r.tools.push(step);
  }
  step.arguments += text;
}

// A tool_result matches its call by id.
export function onToolResult(r, payload) {
  let step = r.tools.find((s) => s.id === payload.id);
  if (!step) {
    step = { id: String(payload.id), name: String(payload.name || "tool"), index: -1,
             arguments: "", offset: r.source.length };
    r.tools.push(step);
  }
  step.ok = payload.ok === true;
  step.content = typeof payload.content === "string" ? payload.content : "";
  const ms = Number(payload.elapsed_ms);
  step.elapsedMs = Number.isFinite(ms) && ms >= 0 ? ms : null;
}

// JSON pretty-printed when it is an object or an array, else the text as it is.
function pretty(text) {
  try {
    const value = JSON.parse(text);
    if (value && typeof value === "object") return JSON.stringify(value, null, 2);
  } catch (_) { /* not JSON (or not yet whole): as it is */ }
  return text;
}

function createView() {
  const details = element("details", "tool-step");
  const icon = element("span", "tool-icon", "🔧");
  icon.setAttribute("role", "img");
  icon.setAttribute("aria-label", "Tool");
  const name = element("span", "tool-name");
  const outcome = element("span", "tool-outcome");
  const summary = element("summary", "tool-summary");
  summary.append(icon, " ", name, outcome);
  const argumentsLabel = element("p", "tool-label", "Arguments");
  const args = element("pre", "tool-arguments");
  const resultLabel = element("p", "tool-label", "Result");
  const result = element("pre", "tool-result");
  details.append(summary, argumentsLabel, args, resultLabel, result);
  return { details, name, outcome, args, resultLabel, result, shown: {} };
}

function setText(view, key, node, text) {
  if (view.shown[key] === text) return;
  view.shown[key] = text;
  node.textContent = text;
}

// "· 0.4 s · ok", "· running…" while it runs (live), "· no result" in an answer that ended
// without it.
function outcomeOf(step, live) {
  if (typeof step.ok !== "boolean") return [live ? " · running…" : " · no result", ""];
  const time = Number.isFinite(step.elapsedMs) ? ` · ${secondsText(step.elapsedMs)}` : "";
  return step.ok ? [`${time} · ok`, "tool-ok"] : [`${time} · failed`, "tool-failed"];
}

function updateView(view, step, live) {
  if (view.shown.name !== step.name) {
    scrollable(view.args, `Arguments of ${step.name}`);
    scrollable(view.result, `Result of ${step.name}`);
  }
  setText(view, "name", view.name, step.name);
  const [outcome, kind] = outcomeOf(step, live);
  setText(view, "outcome", view.outcome, outcome);
  view.outcome.className = `tool-outcome ${kind}`.trim();
  setText(view, "args", view.args, pretty(step.arguments));
  const done = typeof step.content === "string";
  view.resultLabel.hidden = !done;
  view.result.hidden = !done;
  setText(view, "result", view.result, done ? pretty(step.content) : "");
}

// The answer as [{text}|{step}]: its text cut at each step's offset.
function layoutOf(source, steps) {
  const items = [];
  let from = 0;
  for (const step of steps) {
    const at = Math.min(Math.max(Number(step.offset) || 0, from), source.length);
    if (at > from || !items.length) items.push({ text: source.slice(from, at) });
    items.push({ step });
    from = at;
  }
  items.push({ text: source.slice(from) });
  return items;
}

function nodesOf(body, text) {
  const made = markdownNodes(body, text);
  return made.nodeType === Node.DOCUMENT_FRAGMENT_NODE ? [...made.childNodes] : [made];
}

// Show an answer (a turn of render.createTurn) with its tool steps; live: it is still being
// written. Without steps it is its Markdown, as before. With steps, a step's line is made
// once and never taken out of the page while the answer grows (its open state and the focus
// stay), and only the text parts that changed are rendered again.
export function paintAnswer(turn, source, steps, live) {
  const { body } = turn;
  if (!Array.isArray(steps) || !steps.length) {
    turn.layout = null;
    renderMarkdown(body, source);
    return;
  }
  if (!turn.layout) {
    body.replaceChildren();
    turn.layout = [];
    turn.views = new Map();
  }
  const before = turn.layout;
  const items = layoutOf(source, steps);
  const kept = new Set();
  items.forEach((item, k) => {
    const old = before[k];
    if (item.step || !old || !old.nodes || old.text !== item.text) return;
    item.nodes = old.nodes;
    kept.add(k);
  });
  before.forEach((old, k) => {
    if (old.nodes && !kept.has(k)) old.nodes.forEach((node) => node.remove());
  });
  const wanted = new Set(steps.map((step) => step.id));
  for (const [id, view] of turn.views) {
    if (!wanted.has(id)) {
      view.details.remove();
      turn.views.delete(id);
    }
  }
  let anchor = null;
  const place = (node) => {
    const at = anchor ? anchor.nextSibling : body.firstChild;
    if (at !== node) body.insertBefore(node, at);
    anchor = node;
  };
  for (const item of items) {
    if (item.step) {
      let view = turn.views.get(item.step.id);
      if (!view) {
        view = createView();
        turn.views.set(item.step.id, view);
      }
      updateView(view, item.step, live);
      place(view.details);
    } else {
      if (!item.nodes) item.nodes = nodesOf(body, item.text);
      item.nodes.forEach(place);
    }
  }
  turn.layout = items.map((item) => (item.step ? {} : { text: item.text, nodes: item.nodes }));
}
