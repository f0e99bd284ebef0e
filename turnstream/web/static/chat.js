// One open conversation: its history, the reply being written, sending, stopping, and the
// status line. The rules for coming back are docs/protocol.md, "How a client resumes":
//
// - on opening (a reload included), ask active-session; load the messages; if a run is
//   active, show the messages without that run's own and replay the run from its start
//   (cursor 0-0), so that its whole partial reply appears once and goes on growing;
// - a run that ended meanwhile is in the messages;
// - every few seconds (and when another tab of this browser starts a run) task-status
//   says whether a run we do not show yet started here, from another tab or device.

import { api, ApiError } from "./api.js";
import { follow, Detached } from "./follow.js";
import { renderHistory, TurnView, userMessage } from "./render.js";

const POLL_MS = 3000;
const DEFAULT_TITLE = "New conversation";

export class ConversationView {
  constructor({ log, status, statusText, stopButton, sendButton, notice, onAuthFailed, onGone, onChanged, channel }) {
    Object.assign(this, { log, status, statusText, stopButton, sendButton, notice });
    Object.assign(this, { onAuthFailed, onGone, onChanged, channel });
    this.cid = null;
    this.title = "";
    this.generation = 0; // bumped on every open: answers for an older one are dropped
    this.following = null; // {controller, sessionId}
    this.knownSession = null; // the newest run this view shows
    this.connection = "live";
    this.task = null; // the last task-status
    this.reachable = true; // the last poll got an answer
    this.syncing = null;
    this.synced = false; // the history of this conversation is on the page
    setInterval(() => this.poll(), POLL_MS);
    document.addEventListener("visibilitychange", () => this.poll());
    for (const change of ["online", "offline"]) window.addEventListener(change, () => this.showStatus());
  }

  async open(cid, title) {
    this.detach();
    this.generation += 1;
    this.cid = cid;
    this.title = title || "";
    this.knownSession = null;
    this.task = null;
    this.synced = false;
    this.log.replaceChildren();
    this.showNotice("");
    this.showStatus();
    if (cid) await this.sync();
  }

  detach() {
    if (this.following) this.following.controller.abort();
    this.following = null;
    this.setRunning(false);
  }

  // Show what the server has: the stored messages, and the active run replayed from its start.
  async sync() {
    if (this.syncing) return this.syncing;
    this.syncing = this.guard(async (generation) => {
      const session = await api.activeSession(this.cid);
      const { items } = await api.messages(this.cid);
      if (generation !== this.generation) return;
      const active = session && session.status === "active" ? session.sessionId : null;
      // A run being followed shows itself: a message just sent (its run not named yet), or
      // the active run itself.
      if (this.following && [null, active].includes(this.following.sessionId)) return;
      this.detach();
      this.showHistory(items.filter((m) => !active || m.session_id !== active));
      this.knownSession = session ? session.sessionId : null;
      this.synced = true;
      if (this.notice.dataset.kind === "network") this.showNotice("");
      if (active) this.followRun({ sessionId: active, turn: this.addTurn(active) });
    }).finally(() => {
      this.syncing = null;
    });
    return this.syncing;
  }

  showHistory(messages) {
    this.log.replaceChildren(...renderHistory(messages));
    this.scrollToEnd(true);
  }

  addTurn(sessionId) {
    const turn = new TurnView(sessionId);
    this.log.append(turn.node);
    this.scrollToEnd(true);
    return turn;
  }

  async send(content) {
    if (!this.cid) return false;
    if (this.syncing) await this.syncing; // the history first, and any active run with it
    if (this.following) return false;
    const firstMessage = !this.log.querySelector(".msg") && this.title === DEFAULT_TITLE;
    const question = userMessage(content, { pending: true });
    this.log.append(question);
    const turn = this.addTurn(null);
    const post = { content, key: uuid() };
    const done = this.followRun({ post, turn });
    if (firstMessage) this.retitle(content);
    const outcome = await done;
    if (outcome === "refused") {
      question.remove();
      turn.node.remove();
      return false;
    }
    return true;
  }

  async retitle(content) {
    const title = content.replace(/\s+/g, " ").trim().slice(0, 60);
    try {
      await api.rename(this.cid, title || DEFAULT_TITLE);
      this.onChanged();
    } catch {
      // the default title stays
    }
  }

  // Follow one run into `turn` until its end; "ended", "refused", "detached" or "failed".
  async followRun({ sessionId = null, post = null, turn }) {
    const controller = new AbortController();
    const generation = this.generation;
    const following = { controller, sessionId };
    this.following = following;
    this.setRunning(true);
    try {
      const end = await follow({
        cid: this.cid,
        sessionId,
        post,
        signal: controller.signal,
        onEvent: (event, { id, sessionId: sid }) => this.onEvent(turn, event, id, sid, following),
        onConnection: (state) => this.setConnection(state),
        onGap: () => turn.noteGap(),
      });
      // The `end` event finished the turn; a run with missing events shows as stored.
      if (end.gap || end.gone) await this.reloadHistory(generation);
      return "ended";
    } catch (error) {
      if (error instanceof Detached) return "detached";
      this.setConnection("live");
      if (error instanceof ApiError && error.status === 409 && error.body.sessionId) {
        this.showNotice("A reply is already being written in this conversation: here it is.");
        this.following = null;
        this.sync();
        return "refused";
      }
      if (error instanceof ApiError && [400, 413, 429].includes(error.status)) {
        this.showNotice(error.body.detail || error.message);
        return "refused";
      }
      this.failed(error);
      return "failed";
    } finally {
      if (this.following === following) {
        this.following = null;
        this.task = null; // until the next task-status
        setTimeout(() => this.poll(), 0);
        this.setRunning(false);
        this.setConnection("live");
        this.onChanged();
      }
    }
  }

  onEvent(turn, event, id, sessionId, following) {
    if (sessionId && !turn.node.dataset.sessionId) {
      turn.node.dataset.sessionId = sessionId;
      following.sessionId = sessionId;
      this.knownSession = sessionId;
      this.channel.postMessage({ type: "run", cid: this.cid, sessionId });
      this.poll(); // task-status: when it should be done
    }
    const stick = this.nearEnd();
    turn.apply(event, id);
    if (stick) this.scrollToEnd();
  }

  async reloadHistory(generation) {
    const { items } = await api.messages(this.cid);
    if (generation === this.generation) this.showHistory(items);
  }

  async stop() {
    if (!this.cid) return;
    this.stopButton.disabled = true;
    this.statusText.textContent = "Stopping…";
    try {
      await api.stop(this.cid);
    } catch (error) {
      if (!(error instanceof ApiError && [404, 409].includes(error.status))) this.failed(error);
    } finally {
      this.stopButton.disabled = false;
    }
  }

  async poll() {
    if (!this.cid || document.hidden || this.syncing) return;
    await this.guard(async (generation) => {
      let task;
      try {
        task = await api.taskStatus(this.cid);
      } catch (error) {
        if (error instanceof ApiError) throw error;
        this.reachable = false; // the status says so; the next poll tries again
        this.showStatus();
        return;
      }
      if (generation !== this.generation) return;
      this.task = task;
      this.reachable = true;
      this.showStatus();
      const newest = task ? task.sessionId : null;
      if (!this.following && (!this.synced || newest !== this.knownSession)) await this.sync();
    });
  }

  // Run `work(generation)`; a 401 signs out, a 403 means the conversation is gone.
  async guard(work) {
    const generation = this.generation;
    try {
      await work(generation);
    } catch (error) {
      if (generation === this.generation) this.failed(error);
    }
  }

  failed(error) {
    if (error instanceof ApiError && error.status === 401) this.onAuthFailed();
    else if (error instanceof ApiError && error.status === 403) this.onGone(this.cid);
    else if (error instanceof ApiError) this.showNotice(error.body.detail || error.message);
    else if (!(error instanceof Detached)) {
      this.showNotice(`Could not reach the server (${error.message}): trying again.`, "network");
    }
  }

  setRunning(running) {
    // Stop takes Send's place while a reply is written, and the focus with it.
    const focused = document.activeElement;
    this.stopButton.hidden = !running;
    this.sendButton.hidden = running;
    if (running && focused === this.sendButton) this.stopButton.focus();
    if (!running && focused === this.stopButton) this.sendButton.focus();
    this.showStatus();
  }

  setConnection(state) {
    this.connection = state;
    this.showStatus();
  }

  showStatus() {
    const active = Boolean(this.following) || Boolean(this.task && this.task.isActive);
    let state = active ? "active" : "idle";
    let text = active ? "Writing…" : "Ready";
    if (!navigator.onLine || (this.following && this.connection === "offline")) {
      state = "offline";
      text = "Offline";
    } else if (this.following && this.connection === "reconnecting") {
      state = "reconnecting";
      text = "Reconnecting…";
    } else if (!this.reachable && !this.following) {
      state = "reconnecting";
      text = "Server unreachable";
    } else if (active && this.task && this.task.isActive) {
      const left = Math.round((this.task.estimatedCompletion - Date.now()) / 1000);
      if (left > 0) text = `Writing… about ${left} s left`;
    }
    this.status.dataset.state = state;
    this.statusText.textContent = text;
  }

  showNotice(text, kind = "info") {
    this.notice.textContent = text;
    this.notice.dataset.kind = kind;
    this.notice.hidden = !text;
  }

  nearEnd() {
    const { scrollTop, scrollHeight, clientHeight } = this.log;
    return scrollHeight - scrollTop - clientHeight < 80;
  }

  scrollToEnd(force = false) {
    if (force || this.nearEnd()) this.log.scrollTop = this.log.scrollHeight;
  }
}

// A random UUID. (crypto.randomUUID needs a secure context, which a page served over plain
// HTTP at a LAN address is not.)
function uuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
