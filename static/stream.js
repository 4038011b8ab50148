// The stream client: read an answer's Server-Sent Events from the POST or from a resume
// (GET <api>/<stream id>/events with Last-Event-ID), and when a connection ends, decide:
// settle the answer, pause it (a hidden tab), or resume it with backoff.
import * as sse from "./sse.js";
import { setModel } from "./render.js";
import { endReasoning, finish, paint, refused, saveProgress, schedulePaint } from "./answer.js";
import { onToolCall, onToolResult } from "./tools.js";
import { apiUrl, csrfHeaders, runStatus, state, ui, updateButtons } from "./state.js";
import { GONE, LOST, NEVER_STARTED, progressText, retryAfterSeconds } from "./wording.js";

const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 8000;
const MAX_ATTEMPTS = 6;
const HIDDEN_GRACE_MS = 2000; // then a hidden tab lets go of its connection

// What each event of Rill's stream does to the run (see README, "The API").
const handlers = {
  start(r, payload) {
    r.streamId = payload.stream_id || null;
    if (payload.model) {
      r.model = payload.model;
      setModel(r.turn, payload.model);
    }
    runStatus(r, "Generating…", "busy");
    saveProgress(r, true);
  },
  delta(r, payload) {
    if (!payload.content) return;
    endReasoning(r);
    if (!r.firstTokenAt) r.firstTokenAt = Date.now();
    r.tokens += 1;
    r.source += payload.content;
  },
  reasoning(r, payload) {
    if (!payload.content) return;
    if (!r.reasoningStarted) r.reasoningStarted = Date.now();
    r.reasoning += payload.content;
  },
  tool_call(r, payload) {
    endReasoning(r);
    onToolCall(r, payload);
  },
  tool_result: onToolResult,
  done(r, payload) {
    r.outcome = "done";
    r.payload = payload;
  },
  error(r, payload) {
    r.outcome = "error";
    r.payload = payload;
  },
};

// Each event id is applied once: a replay after a resume skips what was already seen.
// An error without an id (the hub was unreachable) or a shutdown error means: resume.
function onEvent(r, message, controller) {
  if (r.outcome || r.finished || r.controller !== controller) return;
  const id = message.ownId === null ? null : Number(message.ownId);
  const hasId = id !== null && Number.isInteger(id);
  if (hasId && id <= r.lastId) return;
  let payload;
  try { payload = JSON.parse(message.data) || {}; } catch (_) { return; }
  if (message.event === "error" && (!hasId || payload.code === "hub_unavailable")) {
    controller.abort("transient");
    return;
  }
  if (hasId) r.lastId = id;
  if (message.event === "error" && payload.code === "shutdown" && r.streamId) {
    r.shutdown = payload;
    r.retryAfterMs = (Number(payload.retry_after) || 1) * 1000;
    controller.abort("transient");
    return;
  }
  r.shutdown = null;
  const handler = handlers[message.event];
  if (!handler) return;
  handler(r, payload);
  if (r.outcome) paint(r);
  else schedulePaint(r);
}

// One connection: the POST or a resume; request(signal) makes it. How it ended decides
// what comes next.
export async function connect(r, request) {
  const controller = new AbortController();
  r.controller = controller;
  r.phase = "connecting";
  updateButtons();
  const before = r.lastId;
  let response = null;
  let clean = false;
  try {
    response = await request(controller.signal);
    if (response.status === 204) {
      clean = true; // a finished stream with nothing after our last event (no body)
    } else if (response.ok) {
      r.phase = "streaming";
      if (r.streamId) runStatus(r, progressText(r), "busy");
      updateButtons();
      await sse.readBody(response.body,
                         sse.createParser((message) => onEvent(r, message, controller)));
      clean = true;
    }
  } catch (_) { /* a network error or an abort: told apart below */ }
  if (r.controller !== controller || r.finished) return;
  r.controller = null;
  if (state.unloading) return;
  const reason = controller.signal.aborted ? controller.signal.reason : null;
  if (response && !response.ok && !reason) {
    await notStreamed(r, response);
    return;
  }
  ended(r, reason, r.lastId > before, clean);
}

function ended(r, reason, progressed, clean) {
  if (r.outcome) return finish(r);
  if (reason === "stop") return finish(r, "stopped", "Stopped.");
  if (reason === "hidden") return pause(r);
  if (!r.streamId) return finish(r, "failed", NEVER_STARTED);
  if (progressed) r.attempts = 0; // a resume that brought events worked
  else if (r.shutdown && clean && reason !== "transient") {
    // The server replayed up to its shutdown error and nothing follows: it ended there.
    return finish(r, "failed", r.shutdown.message || "The server restarted.");
  }
  return scheduleResume(r);
}

// Exponential backoff with full jitter: a random wait up to min(cap, base · 2^attempt).
function scheduleResume(r) {
  r.attempts += 1;
  if (r.attempts > MAX_ATTEMPTS) return connectionLost(r);
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (r.attempts - 1));
  const delay = Math.max(Math.random() * ceiling, r.retryAfterMs);
  r.retryAfterMs = 0;
  r.phase = "waiting";
  runStatus(r, "Reconnecting…", "busy");
  updateButtons();
  r.timer = setTimeout(() => {
    r.timer = 0;
    resume(r);
  }, delay);
  return undefined;
}

// Cancel a generation on the server (idempotent; every reader gets done "cancelled").
export function cancelOnServer(streamId) {
  if (!streamId) return;
  fetch(`${apiUrl}/${encodeURIComponent(streamId)}/cancel`, { method: "POST", keepalive: true,
                                                             headers: csrfHeaders })
    .catch(() => {});
}

// Subscribe again to the run's stream, after the last event it applied.
export function resume(r) {
  if (state.runs.get(r.conversation) !== r || r.finished || r.controller) return;
  if (document.hidden) {
    pause(r);
    return;
  }
  runStatus(r, "Reconnecting…", "busy");
  const headers = { Accept: "text/event-stream" };
  if (r.lastId >= 0) headers["Last-Event-ID"] = String(r.lastId);
  const url = `${apiUrl}/${encodeURIComponent(r.streamId)}/events`;
  connect(r, (signal) => fetch(url, { headers, signal, cache: "no-store" }));
}

function pause(r) {
  r.phase = "paused";
  saveProgress(r, true);
  runStatus(r, "Paused while this tab is hidden — it picks up again when you return.",
            "busy");
  updateButtons();
}

function connectionLost(r) {
  r.phase = "lost";
  r.attempts = 0;
  saveProgress(r, true);
  runStatus(r, LOST, "error");
  updateButtons();
  if (r.conversation === state.currentId) ui.retryButton.focus({ preventScroll: true });
}

// The server answered with an error status instead of a stream.
async function notStreamed(r, response) {
  if (!r.streamId) return refused(r, response);
  if (response.status === 404 || response.status === 410 || response.status === 400) {
    return finish(r, "failed", GONE);
  }
  const wait = retryAfterSeconds(response.headers);
  if (wait !== null) r.retryAfterMs = wait * 1000;
  return scheduleResume(r);
}

// A hidden tab lets go of its connection after a grace (the server keeps generating),
// so many background tabs never use up the browser's six connections per origin; a page
// leaving saves its progress, and one coming back from the back/forward cache resumes.
export function watchPageLifecycle() {
  document.addEventListener("visibilitychange", () => {
    for (const r of state.runs.values()) {
      if (document.hidden) {
        saveProgress(r, true);
        const release = () => {
          r.hiddenTimer = 0;
          if (!document.hidden || r.finished || !r.controller) return;
          if (!r.streamId) r.hiddenTimer = setTimeout(release, 500); // not resumable yet
          else r.controller.abort("hidden");
        };
        if (!r.hiddenTimer) r.hiddenTimer = setTimeout(release, HIDDEN_GRACE_MS);
      } else {
        clearTimeout(r.hiddenTimer);
        r.hiddenTimer = 0;
        if (r.phase === "paused") {
          r.attempts = 0;
          resume(r);
        }
      }
    }
  });
  window.addEventListener("pagehide", () => {
    for (const r of state.runs.values()) saveProgress(r, true);
    state.unloading = true;
  });
  window.addEventListener("pageshow", (event) => {
    state.unloading = false;
    if (!event.persisted) return;
    for (const r of state.runs.values()) if (!r.controller && !r.timer) resume(r);
  });
}
