// Turns of the transcript, and assistant answers as sanitised Markdown (markdown-it, code
// blocks coloured by highlight.js, then DOMPurify); an ES module. Without the vendored
// libraries answers stay text (and code blocks uncoloured without highlight.js).
import { thoughtText } from "./wording.js";
// Only http(s), mailto and relative URLs survive (no javascript:, data:, vbscript:, …).
const SAFE_URL = /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i;
const PURIFY_CONFIG = {
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "img", "svg",
                "math", "iframe", "object", "embed"],
  FORBID_ATTR: ["style"],
  ALLOWED_URI_REGEXP: SAFE_URL,
  RETURN_DOM_FRAGMENT: true,
};

export function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

export function button(className, text, label) {
  const node = element("button", `small ${className}`, text);
  node.type = "button";
  if (label) node.setAttribute("aria-label", label);
  return node;
}

// A fenced code block's HTML coloured by highlight.js when it knows the block's language
// ("" otherwise: markdown-it escapes it as plain text). highlight.js emits <span class="hljs-…">
// only, which DOMPurify keeps and the CSP allows (no style attributes).
function highlightCode(code, language) {
  const { hljs } = window;
  if (!hljs || !language || !hljs.getLanguage(language)) return "";
  try {
    return hljs.highlight(code, { language, ignoreIllegals: true }).value;
  } catch (_) {
    return "";
  }
}

function createMarkdown() {
  const { markdownit, DOMPurify } = window;
  if (!markdownit || !DOMPurify || !DOMPurify.isSupported) return null;
  const md = markdownit({ html: false, linkify: true, typographer: false,
                         highlight: highlightCode });
  // Table alignment comes as style attributes, which the CSP refuses: use classes.
  md.core.ruler.push("rill_align", (state) => {
    const walk = (tokens) => tokens.forEach((token) => {
      if ((token.type === "th_open" || token.type === "td_open") && token.attrs) {
        const style = token.attrGet("style") || "";
        token.attrs = token.attrs.filter(([name]) => name !== "style");
        const align = /text-align:\s*(left|right|center)/.exec(style);
        if (align) token.attrJoin("class", `align-${align[1]}`);
      }
      if (token.children) walk(token.children);
    });
    walk(state.tokens);
  });
  // A model's image would load from anywhere (and could carry data out in its URL): show
  // it as a link instead.
  md.renderer.rules.image = (tokens, index, options, env, self) => {
    const token = tokens[index];
    const alt = self.renderInlineAsText(token.children || [], options, env) || "image";
    const src = md.utils.escapeHtml(token.attrGet("src") || "");
    return `<a href="${src}" class="image-link">${md.utils.escapeHtml(`Image: ${alt}`)}</a>`;
  };
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") {
      if (node.hasAttribute("href")) {
        node.setAttribute("target", "_blank");
        node.setAttribute("rel", "noopener noreferrer");
      }
    }
  });
  return (source) => DOMPurify.sanitize(md.render(source), PURIFY_CONFIG);
}

const toFragment = createMarkdown();

// A region that may scroll gets the focus from the keyboard, which can then scroll it, and a
// name that focus announces.
export function scrollable(node, label) {
  node.tabIndex = 0;
  node.setAttribute("role", "group");
  node.setAttribute("aria-label", label);
}

// Wrap code blocks with a Copy button and tables in a scroller.
function enhance(root) {
  // markdown-it puts newlines between blocks; they would only add stray spaces.
  for (const node of [...root.childNodes]) {
    if (node.nodeType === Node.TEXT_NODE && !node.data.trim()) node.remove();
  }
  for (const pre of root.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    const language = code && /(?:^|\s)language-(\S+)/.exec(code.className);
    const head = element("div", "code-head");
    head.append(element("span", "code-lang", language ? language[1] : "code"),
                button("copy-code", "Copy", "Copy code"));
    scrollable(pre, language ? `Code: ${language[1]}` : "Code");
    const block = element("div", "code-block");
    pre.replaceWith(block);
    block.append(head, pre);
  }
  for (const table of root.querySelectorAll("table")) {
    const wrap = element("div", "table-wrap");
    table.replaceWith(wrap);
    wrap.append(table);
  }
}

// Markdown source as nodes for a .turn-text element (a text node without the libraries:
// then the element shows it as plain text).
export function markdownNodes(target, source) {
  if (!toFragment) {
    target.classList.add("plain");
    return document.createTextNode(source);
  }
  const fragment = toFragment(source);
  enhance(fragment);
  return fragment;
}

// Show Markdown source in a .turn-text element.
export function renderMarkdown(target, source) {
  target.replaceChildren(markdownNodes(target, source));
}

function createThinking() {
  const details = element("details", "thinking");
  details.hidden = true;
  const summary = element("summary", "", "Thinking…");
  const text = element("div", "thinking-text");
  scrollable(text, "Reasoning");
  details.append(summary, text);
  return { details, summary, text };
}

// Show an answer's reasoning (none: hidden): under "Thinking…" while it goes on, under
// "Thought for N s" once it ended, thoughtMs (ms) after it began.
export function setThinking(turn, reasoning, thoughtMs) {
  const { details, summary, text } = turn.thinking;
  details.hidden = !reasoning;
  if (!reasoning) return;
  text.textContent = reasoning;
  summary.textContent = Number.isFinite(thoughtMs) ? thoughtText(thoughtMs) : "Thinking…";
}

// One <li> of the transcript. User text is only ever text; an assistant answer is
// Markdown, re-rendered from its source by the caller.
export function createTurn(role, content, model) {
  const item = element("li", `turn turn-${role}`);
  item.dataset.role = role;
  const label = element("p", "turn-label");
  label.append(element("span", "turn-role", role === "user" ? "You" : "Assistant"));
  const body = element("div", "turn-text");
  const turn = { item, label, body, thinking: null, actions: null, model: null };
  if (role === "assistant") {
    body.classList.add("markdown");
    turn.thinking = createThinking();
    turn.actions = element("div", "turn-actions");
    turn.actions.append(button("copy-answer", "Copy", "Copy answer as Markdown"));
    item.append(label, turn.thinking.details, body, turn.actions);
    if (content) renderMarkdown(body, content);
  } else {
    body.textContent = content || "";
    turn.actions = element("div", "turn-actions");
    turn.actions.append(button("edit-message", "Edit", "Edit message"));
    item.append(label, body, turn.actions);
  }
  if (model) setModel(turn, model);
  return turn;
}

// A turn with several versions gets ‹ index/count › (index from 1) at the head of its
// actions; a turn with one, none.
export function setVersions(turn, index, count) {
  let box = turn.actions.querySelector(".versions");
  if (count < 2) {
    if (box) box.remove();
    return;
  }
  if (!box) {
    box = element("div", "versions");
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "Versions");
    const label = element("span", "version-label");
    label.setAttribute("aria-live", "polite");
    box.append(button("version-prev", "‹", "Previous version"), label,
               button("version-next", "›", "Next version"));
    turn.actions.prepend(box);
  }
  box.querySelector(".version-label").textContent = `${index}/${count}`;
  box.querySelector(".version-prev").disabled = index <= 1;
  box.querySelector(".version-next").disabled = index >= count;
}

// Show another version in a turn's <li> (item) in place: its parts are turn's, but item and
// its version switcher stay (set anew), so the focus and the live label stay with them.
export function replaceTurn(item, turn, index, count) {
  const box = item.querySelector(".versions");
  const actions = box.parentElement;
  item.className = turn.item.className;
  for (const name of ["turn", "role"]) item.dataset[name] = turn.item.dataset[name];
  const busy = turn.item.getAttribute("aria-busy");
  if (busy) item.setAttribute("aria-busy", busy);
  else item.removeAttribute("aria-busy");
  for (const child of [...item.children]) if (child !== actions) child.remove();
  for (const child of [...actions.children]) if (child !== box) child.remove();
  turn.actions.querySelector(".versions")?.remove();
  actions.append(...turn.actions.children);
  let before = actions;
  for (const child of [...turn.item.children]) {
    if (child === turn.actions) before = null; // what follows the actions (a note) goes after
    else item.insertBefore(child, before);
  }
  turn.item = item;
  turn.actions = actions;
  setVersions(turn, index, count);
}

export function setModel(turn, model) {
  if (!turn.model) {
    turn.model = element("span", "turn-model");
    turn.label.append(turn.model);
  }
  turn.model.textContent = model;
}

// Copy text to the clipboard; resolves true when it worked. The async API needs a secure
// context (https or loopback); elsewhere fall back to a selection and execCommand.
async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (_) {
    const area = element("textarea", "clipboard-buffer");
    area.value = text;
    area.setAttribute("readonly", "");
    document.body.append(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (__) { ok = false; }
    area.remove();
    return ok;
  }
}

// Briefly say on a button whether the copy worked.
export async function copyWithFeedback(node, text) {
  const ok = await copyText(text);
  const before = node.dataset.label || node.textContent;
  node.dataset.label = before;
  node.textContent = ok ? "Copied" : "Copy failed";
  node.classList.toggle("copied", ok);
  clearTimeout(node.copyTimer);
  node.copyTimer = setTimeout(() => {
    node.textContent = before;
    node.classList.remove("copied");
  }, 1500);
}
