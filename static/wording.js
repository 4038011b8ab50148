// What the chat page says: status lines, refusals, times.

export const LOST = "Connection lost — the answer is incomplete. Retry to pick it up again.";
export const NEVER_STARTED = "Connection lost before the answer started. Please send again.";
export const GONE = "This answer is no longer on the server (it expired, or the server restarted); "
  + "the part that arrived is kept.";

export const STILL_WRITING = "The answer in this conversation is still being written. "
  + "Wait for it to finish, or stop it, then send.";

export const STILL_WRITING_VERSIONS = "The answer in this conversation is still being "
  + "written. Wait for it to finish, or stop it, then choose another version.";

// Said when this browser already has as many answers in flight as the server allows it.
export function atCapacity(most) {
  return `${plural(most, "answer is", "answers are")} being written already, the most at once. `
    + "Wait for one to finish, or stop one, then send.";
}

export function plural(n, word, many = `${word}s`) {
  return `${n} ${n === 1 ? word : many}`;
}

// Retry-After is delay-seconds or an HTTP-date (RFC 9110, section 10.2.3); null if absent.
export function retryAfterSeconds(headers) {
  const value = (headers.get("Retry-After") || "").trim();
  if (!value) return null;
  if (/^\d+$/.test(value)) return Number(value);
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

// The message of a response that refused to stream: the API's {"error": {"message"}} when
// there is one, and how long to wait on a 429 or 503 with Retry-After.
export async function refusalText(response) {
  let message = `The server answered ${response.status}. Please try again.`;
  try {
    const payload = await response.json();
    if (payload && payload.error && payload.error.message) message = payload.error.message;
  } catch (_) { /* not JSON (a proxy's page, say): keep the generic message */ }
  const wait = response.status === 429 || response.status === 503
    ? retryAfterSeconds(response.headers) : null;
  if (wait !== null && !message.includes(`${wait} s`)) {
    message += ` Please wait ${plural(wait, "second")} before sending again.`;
  }
  return message;
}

export function progressText(run) {
  return run.tokens ? `Generating… ${plural(run.tokens, "token")}` : "Generating…";
}

// "Done — N tokens in X.Y s · first token N ms · N tok/s" (TTFT, then the writing rate).
export function doneText(run, payload) {
  const now = Date.now();
  const seconds = ((now - run.started) / 1000).toFixed(1);
  const usage = payload.usage && payload.usage.completion_tokens;
  const count = Number.isInteger(usage) ? usage : run.tokens;
  const tokens = plural(count, "token");
  if (payload.finish_reason === "cancelled") return `Stopped — ${tokens} in ${seconds} s`;
  let text = `Done — ${tokens} in ${seconds} s`;
  if (run.firstTokenAt) {
    text += ` · first token ${Math.round(run.firstTokenAt - run.started)} ms`;
    const writing = (now - run.firstTokenAt) / 1000;
    if (count > 1 && writing > 0) {
      const rate = count / writing;
      text += ` · ${rate < 10 ? rate.toFixed(1) : Math.round(rate)} tok/s`;
    }
  }
  if (payload.finish_reason === "length") text += " (stopped at the token limit)";
  return text;
}

// A duration (ms) for people: "37 ms" under 0.1 s, "2.4 s", whole seconds from 10 s on.
export function secondsText(ms) {
  if (ms < 100) return `${Math.round(ms)} ms`;
  const seconds = ms / 1000;
  return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
}

// The summary of an answer's reasoning once it has ended: "Thought for 2.4 s".
export function thoughtText(ms) {
  return `Thought for ${secondsText(ms)}`;
}

// A conversation's time in the sidebar: the hour today, the day before.
export function shortTime(ms) {
  const date = new Date(ms);
  const today = new Date();
  return date.toDateString() === today.toDateString()
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}
