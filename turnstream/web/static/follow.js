// Following one run's events to its `end`, across dropped connections
// (docs/protocol.md, "Cursors and resuming"):
//
// - a new message is POSTed with an Idempotency-Key; until the run's session id is known
//   (the X-Session-Id header, or the `queued` event), a retry POSTs again with the same
//   key, which starts nothing new and replays the run from its first event;
// - after that, GET …/resume/{sessionId}?cursor=<the id of the last event received>;
// - events are handed out once each, by `seq`; a jump in `seq` is noted as a gap;
// - a dropped connection is resumed after 0.25 s, then twice as long each time up to 5 s
//   (or a 503's Retry-After); going offline drops it at once, and coming back online
//   resumes at once; a connection silent for 45 s (the server pings every 15) is dropped;
// - 409 (cursor expired): resume from `resync.cursor`, noted as a gap (the caller shows the
//   stored messages once the run has ended); 409 (cursor ahead of the run: events this page
//   saw were lost in a Redis failover): from the start, noted as a gap too, since what
//   follows the lost events differs from them; 404: the run's events are gone.

import { ApiError, conversationPath, readError, request } from "./api.js";
import { readFrames } from "./sse.js";

const FIRST_WAIT = 250;
const LONGEST_WAIT = 5000;
const SILENCE = 45000;
const RETRY_STATUSES = new Set([502, 503, 504]);
const AT_ONCE = Symbol("resume at once");

export class Detached extends Error {}

export async function follow(options) {
  const run = new Run(options);
  return run.loop();
}

class Run {
  constructor({ cid, sessionId = null, cursor = "0-0", post = null, onEvent, onConnection, onGap, signal }) {
    this.cid = cid;
    this.sessionId = sessionId;
    this.cursor = cursor;
    this.post = post; // {content, key}: a message not yet known to have started a run
    this.onEvent = onEvent;
    this.onConnection = onConnection || (() => {});
    this.onGap = onGap || (() => {});
    this.signal = signal;
    this.seq = 0;
    this.gap = false;
    this.failures = 0;
  }

  async loop() {
    for (;;) {
      if (this.signal.aborted) throw new Detached();
      let wait = null;
      try {
        const end = await this.attempt();
        if (end === AT_ONCE) continue;
        if (end) return end;
      } catch (error) {
        if (this.signal.aborted) throw new Detached();
        if (error instanceof ApiError && !RETRY_STATUSES.has(error.status)) throw error;
        wait = error instanceof ApiError ? Math.min(30, error.retryAfter || 5) * 1000 : null;
      }
      this.failures += 1;
      this.onConnection(navigator.onLine ? "reconnecting" : "offline");
      await pause(wait ?? Math.min(LONGEST_WAIT, FIRST_WAIT * 2 ** (this.failures - 1)), this.signal);
    }
  }

  // One request: resolves to the run's end, to null when the connection ended first, or to
  // AT_ONCE after a 409 whose resync cursor was taken.
  async attempt() {
    const controller = new AbortController();
    const abort = () => controller.abort();
    this.signal.addEventListener("abort", abort);
    window.addEventListener("offline", abort);
    let timer = setTimeout(abort, SILENCE);
    const alive = () => {
      clearTimeout(timer);
      timer = setTimeout(abort, SILENCE);
    };
    try {
      const response = await this.open(controller.signal);
      if (response === null) return AT_ONCE;
      if (response.gone) return { gone: true, sessionId: this.sessionId, gap: true };
      this.onConnection("live");
      for await (const frame of readFrames(response.body, alive)) {
        const end = this.frame(frame);
        if (end) return end;
      }
      return null;
    } finally {
      clearTimeout(timer);
      this.signal.removeEventListener("abort", abort);
      window.removeEventListener("offline", abort);
    }
  }

  // The stream's response, or null after a 409 whose resync cursor was taken (retry at once).
  async open(signal) {
    let response;
    if (this.sessionId === null) {
      response = await request(conversationPath(this.cid, "message") + "/", {
        method: "POST",
        json: { content: this.post.content },
        headers: { "Idempotency-Key": this.post.key },
        signal,
      });
    } else {
      const path = conversationPath(this.cid, "resume", this.sessionId);
      response = await request(path, { params: { cursor: this.cursor }, signal });
    }
    if (response.ok) {
      this.sessionId ??= response.headers.get("X-Session-Id");
      return response;
    }
    const error = await readError(response);
    if (error.status === 404 && this.sessionId !== null) return { gone: true };
    const ahead = error.status === 409 && error.body.error === "Cursor ahead of the run";
    const resync = ahead ? "0-0" : error.status === 409 && error.body.resync && error.body.resync.cursor;
    if (!resync || this.sessionId === null) throw error;
    this.cursor = resync;
    this.gap = true;
    this.onGap();
    this.failures = 0;
    return null;
  }

  frame(frame) {
    // Without an id: a server's notice (it lost Redis, or it is shutting down). The run goes on; resume.
    if (!frame.id) return null;
    const event = JSON.parse(frame.data);
    if (event.seq <= this.seq) return null;
    if (event.seq !== this.seq + 1) this.gap = true;
    this.seq = event.seq;
    this.cursor = frame.id;
    this.failures = 0;
    if (event.type === "queued" && this.sessionId === null) this.sessionId = event.sessionId;
    this.onEvent(event, { id: frame.id, sessionId: this.sessionId });
    if (event.type !== "end") return null;
    return { status: event.status, messageId: event.messageId, sessionId: this.sessionId, gap: this.gap };
  }
}

// Wait `ms`, or until the browser is back online; while offline, until it is online again.
function pause(ms, signal) {
  return new Promise((resolve, reject) => {
    const cleanUp = () => {
      clearTimeout(timer);
      window.removeEventListener("online", done);
      signal.removeEventListener("abort", aborted);
    };
    const done = () => {
      cleanUp();
      resolve();
    };
    const aborted = () => {
      cleanUp();
      reject(new Detached());
    };
    const timer = navigator.onLine ? setTimeout(done, ms) : null;
    window.addEventListener("online", done);
    signal.addEventListener("abort", aborted);
  });
}
