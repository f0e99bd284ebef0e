// One open conversation: its history, the reply being written, sending, stopping, the
// status line, and its files (FilesPanel). The rules for coming back are docs/protocol.md, "How a client resumes":
//
// - on opening (a reload included), ask active-session; load the messages; if a run is
//   active, show the messages without that run's own and replay the run from its start
//   (cursor 0-0), so that its whole partial reply appears once and goes on growing;
// - a run that ended meanwhile is in the messages;
// - every few seconds (and when another tab of this browser starts a run) task-status
//   says whether a run we do not show yet started here, from another tab or device.
//
// Files attached to a message are uploaded first (one multipart POST), then the message is
// posted; the Files panel asks for the workspace's listing again after that, on each `file` event, and
// with each look at the history.

import { api, ApiError } from "./api.js";
import { follow, Detached } from "./follow.js";
import { fileRef, humanSize, linkRef, renderHistory, TurnView, userMessage } from "./render.js";

const POLL_MS = 3000;
const DEFAULT_TITLE = "New conversation";
// A listing's links are reused while they are younger than this (an <img> keeps its cached
// bytes), and the listing is asked again every REFRESH_MS: a link shown is never stale.
const REUSE_MS = 40 * 60 * 1000;
const REFRESH_MS = 15 * 60 * 1000;

export class ConversationView {
  constructor({ log, status, statusText, stopButton, sendButton, notice, files, onAuthFailed, onGone, onChanged, channel }) {
    Object.assign(this, { log, status, statusText, stopButton, sendButton, notice, files });
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
    this.uploading = false; // files attached to a message are being uploaded
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
    this.files.open(cid);
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
    this.files.linkAll(this.log); // from the listing at hand, then from a new one
    this.files.refresh();
    this.scrollToEnd(true);
  }

  addTurn(sessionId) {
    const turn = new TurnView(sessionId);
    turn.onDecide = (approvalId, approved) => this.decide(approvalId, approved);
    this.log.append(turn.node);
    this.scrollToEnd(true);
    return turn;
  }

  // Send a message, after uploading `attachments` (File objects; `uploaded()` is called once
  // they are stored). False when nothing was sent: an upload refused sends no message.
  async send(content, { attachments = [], uploaded = () => {} } = {}) {
    if (!this.cid) return false;
    if (this.syncing) await this.syncing; // the history first, and any active run with it
    if (this.following) return false;
    const generation = this.generation;
    let files = null;
    if (attachments.length) {
      this.uploading = true;
      this.showStatus();
      try {
        files = await api.upload(this.cid, attachments);
      } catch (error) {
        if (generation !== this.generation) return false;
        if (error instanceof ApiError && [400, 409, 413].includes(error.status)) {
          this.showNotice(`Not sent: ${error.body.detail || error.message}`);
        } else this.failed(error);
        return false;
      } finally {
        this.uploading = false;
        this.showStatus();
      }
      uploaded(files);
      for (const file of files) this.files.remember(file);
      this.files.refresh();
      if (generation !== this.generation || this.following) return false;
    }
    const firstMessage = !this.log.querySelector(".msg") && this.title === DEFAULT_TITLE;
    const question = userMessage(content, { pending: true, files });
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
      if (error instanceof ApiError && [400, 409, 413, 429].includes(error.status)) {
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
    if (event.type === "file") {
      this.files.remember(event);
      this.files.refresh();
    }
    if (stick) this.scrollToEnd();
  }

  // Approve or deny a waiting call: the decision that stands. Decided the other way first (a
  // second tab) is no error: that decision shows. A run that no longer waits is one.
  async decide(approvalId, approved) {
    try {
      return (await api.decide(this.cid, approvalId, approved)).approved;
    } catch (error) {
      if (error instanceof ApiError && error.status === 409 && typeof error.body.approved === "boolean") {
        return error.body.approved;
      }
      throw error;
    }
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
    } else if (this.uploading && !active) {
      state = "active";
      text = "Uploading…";
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

// The Files panel: the open conversation's workspace (docs/files.md), sorted by path, with
// sizes, download links and thumbnails. Its newest listing also links the file references
// in the messages (`log`; render.js).
export class FilesPanel {
  constructor({ panel, list, summary, empty, log, toggle }) {
    Object.assign(this, { panel, list, summary, empty, log, toggle });
    this.cid = null;
    this.entries = null; // path -> entry of the newest listing of this.cid; null until then
    this.links = new Map(); // path -> {sha256, url, at}: links reused, see REUSE_MS
    this.asking = null; // a listing being asked for
    this.again = false; // ask once more when it comes (something changed meanwhile)
    this.generation = 0;
    setInterval(() => this.refresh(), REFRESH_MS);
  }

  // Show `cid`'s files: none until the view's first look at its history asks (refresh).
  open(cid) {
    this.generation += 1;
    this.cid = cid;
    this.entries = null;
    this.links.clear();
    this.asking = null; // an older conversation's, whose answer is dropped
    this.again = false;
    this.list.replaceChildren();
    this.summary.textContent = "";
    this.empty.hidden = true;
    this.panel.hidden = !cid;
    this.toggle.textContent = "Files";
  }

  // Ask for the listing (at most one request at a time; a call meanwhile asks again after).
  refresh() {
    if (!this.cid) return Promise.resolve();
    if (this.asking) {
      this.again = true;
      return this.asking;
    }
    const generation = this.generation;
    const asking = (async () => {
      do {
        this.again = false;
        let listing;
        try {
          listing = await api.files(this.cid);
        } catch (error) {
          if (generation === this.generation) this.failed(error);
          return;
        }
        if (generation !== this.generation) return;
        this.show(listing);
      } while (this.again && generation === this.generation);
    })().finally(() => {
      if (this.asking === asking) this.asking = null;
    });
    this.asking = asking;
    return asking;
  }

  show({ items, total, bytes }) {
    const now = Date.now();
    const entries = new Map();
    for (const item of items) {
      const kept = this.links.get(item.path);
      const reuse = kept && kept.sha256 === item.sha256 && now - kept.at < REUSE_MS;
      const entry = reuse ? { ...item, url: kept.url } : item;
      if (!reuse) this.links.set(item.path, { sha256: item.sha256, url: item.url, at: now });
      entries.set(item.path, entry);
    }
    for (const path of this.links.keys()) if (!entries.has(path)) this.links.delete(path);
    this.entries = entries;
    const count = `${total} ${total === 1 ? "file" : "files"}`;
    this.summary.textContent = total ? `${count}, ${humanSize(bytes)}` : "";
    this.empty.hidden = items.length > 0;
    const old = new Map([...this.list.children].map((li) => [li.dataset.path, li]));
    this.list.replaceChildren(
      ...[...entries.values()].map((entry) => {
        const node = old.get(entry.path) || fileRef(entry);
        node.dataset.size = String(entry.size);
        node.dataset.mediaType = entry.mediaType;
        node.dataset.sha256 = entry.sha256;
        linkRef(node, entry);
        return node;
      }),
    );
    this.toggle.textContent = total ? `Files (${total})` : "Files";
    this.linkAll(this.log);
  }

  // A link just given (an upload's, a `file` event's: as old as the event, which may be
  // replayed long after): the next listing keeps it while it is young enough, so that a
  // thumbnail shown is not loaded again under another link.
  remember(entry) {
    if (!entry.url || entry.deleted) return;
    this.links.set(entry.path, { sha256: entry.sha256, url: entry.url, at: entry.ts || Date.now() });
  }

  // Link the references under `root` from the newest listing (nothing before the first one).
  linkAll(root) {
    if (!this.entries) return;
    for (const node of root.querySelectorAll(".file-ref:not([data-deleted])")) {
      linkRef(node, this.entries.get(node.dataset.path) ?? null);
    }
  }

  failed(error) {
    if (error instanceof ApiError && [401, 403].includes(error.status)) return; // the view says so
    this.summary.textContent = "Could not load the files.";
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
