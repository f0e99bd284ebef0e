// Messages on the page. A user message is plain text, with the files uploaded with it. An
// assistant turn (one run) is an <article> of steps (docs/protocol.md, "Steps"): each
// step's reasoning (apart, folded), its text (Markdown), and its tool calls as <details>,
// each with its arguments and result (the `bash` tool's as a terminal would show it, open).
// A turn is built from a run's live events (TurnView.apply) or from its stored messages
// (renderHistory): assistant{tool_calls} → tool messages (tool_call_id) → … → the final
// assistant message. Model text goes to the page through textContent or renderMarkdown,
// which escapes it: never as HTML of its own. The files a run wrote or deleted (its `file`
// events, or its last stored message's `files`) are listed at the end of its turn.
// A call that waits for the user (`approval_request`, docs/approvals.md) gets a card below
// it, with Approve and Deny; the `approval` event, whichever tab decided, settles the card.

import { renderMarkdown } from "./markdown.js";

const STATUS_TEXT = {
  cancelled: "Stopped",
  error: "Failed",
};

// A node: el("p", {class: "x", text: "…"}, ...children). `text` is textContent, never HTML.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

// File references (docs/files.md): a user message's uploads, or a file a run wrote or
// deleted, named by path. A reference links its file through a signed `url` (valid for an
// hour): a `file` event carries one, a listing gives them afresh, stored messages carry
// none. So the Files panel (chat.js) links every reference from its newest listing, matched
// by path: a file no longer in the workspace shows as plain text. An image (not SVG) shows
// a thumbnail too. File names go to the page as text only, never as HTML.

const SIZE_UNITS = ["KB", "MB", "GB"];

export function humanSize(bytes) {
  let size = Number(bytes) || 0;
  if (size < 1024) return `${size} B`;
  let unit = -1;
  while (size >= 1024 && unit < SIZE_UNITS.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return `${size >= 10 ? Math.round(size) : Math.round(size * 10) / 10} ${SIZE_UNITS[unit]}`;
}

// Whether the page shows the file as an image: image/*, but never SVG (a script could be in it).
export function isImage(mediaType) {
  const type = String(mediaType || "").split(";")[0].trim().toLowerCase();
  return type.startsWith("image/") && type !== "image/svg+xml";
}

// A signed link, as the server gives it (`/api/v1/…`), relative to the page instead, so that
// it also works behind a proxy under a sub-path (as api.js does).
export function fileHref(link) {
  const relative = link.startsWith("/api/v1/") ? link.slice(1) : link;
  return new URL(relative, document.baseURI).href;
}

// A reference to a file in a message: its path as text until linkRef links it.
export function fileRef(file) {
  const node = el("li", { class: "file-ref" });
  node.dataset.path = file.path;
  if (file.sha256) node.dataset.sha256 = file.sha256;
  if (file.deleted) {
    node.dataset.deleted = "true";
    node.append(el("span", { class: "file-deleted", text: "deleted " }), el("span", { class: "file-path", text: file.path }));
    return node;
  }
  node.dataset.mediaType = file.mediaType || "";
  node.dataset.size = String(file.size ?? "");
  linkRef(node, file.url ? file : undefined);
  return node;
}

// Show `entry` (a file with a `url`) in the reference; null: the file is not in the
// workspace (plain text); undefined: not known yet (plain text, until a listing comes).
export function linkRef(node, entry) {
  const path = node.dataset.path;
  const size = entry ? entry.size : node.dataset.size;
  const media = entry ? entry.mediaType : node.dataset.mediaType;
  const parts = [];
  if (entry) {
    const href = fileHref(entry.url);
    if (href === node.dataset.href) return; // unchanged: leave a loaded thumbnail be
    node.dataset.href = href;
    parts.push(el("a", { class: "file-link", href, download: "", text: path }));
    if (isImage(media)) {
      const img = el("img", { src: href, alt: path, loading: "lazy", decoding: "async" });
      parts.push(el("a", { class: "file-thumb", href, download: "", tabindex: "-1", "aria-hidden": "true" }, img));
    }
  } else {
    delete node.dataset.href;
    parts.push(el("span", { class: "file-path", text: path }));
  }
  if (size !== "" && size !== undefined) parts.splice(1, 0, " ", el("span", { class: "file-size", text: humanSize(size) }));
  node.dataset.state = entry ? "linked" : entry === null ? "missing" : "unknown";
  node.title = entry === null ? "No longer in the workspace" : "";
  if (entry && node.dataset.sha256 && entry.sha256 !== node.dataset.sha256) {
    node.title = "Changed since: the link opens its current version";
  }
  node.replaceChildren(...parts);
}

// A list of references (a message's files).
export function fileList(files, className) {
  return el("ul", { class: `file-list ${className}`, "aria-label": "Files" }, ...files.map(fileRef));
}

export function userMessage(content, { pending = false, files = null } = {}) {
  const node = el("article", { class: "msg user", "aria-label": "You" });
  node.append(el("div", { class: "bubble", text: content ?? "" }));
  if (files && files.length) node.append(fileList(files, "user-files"));
  if (pending) node.dataset.pending = "true";
  return node;
}

export class TurnView {
  constructor(sessionId) {
    this.node = el("article", { class: "msg assistant", "aria-label": "Assistant" });
    this.node.dataset.sessionId = sessionId || "";
    this.node.dataset.status = "streaming";
    this.node.setAttribute("aria-busy", "true");
    this.steps = [];
    this.calls = new Map(); // call id -> {node, state, result}
    this.approvals = new Map(); // approval id -> its card
    // (approvalId, approved) -> a promise of the decision that stands; set by chat.js.
    this.onDecide = null;
    this.stepOpen = false; // the current step may take more text
    this.sawResult = false; // the current step has a tool result: what follows starts a step
    this.pendingRender = new Set();
    this.statusLine = null;
    this.fileList = null; // the files the run wrote or deleted, by path
    this.files = new Map();
  }

  get step() {
    if (!this.steps.length || !this.stepOpen) this.newStep();
    return this.steps[this.steps.length - 1];
  }

  newStep() {
    const step = { node: el("div", { class: "step" }), text: "", reasoning: "", textNode: null, reasoningNode: null };
    step.tools = el("div", { class: "tools" });
    step.node.append(step.tools);
    this.node.insertBefore(step.node, this.fileList || this.statusLine);
    this.steps.push(step);
    this.stepOpen = true;
    this.sawResult = false;
    return step;
  }

  // Live events, in order. A delta, reasoning or tool_call after a result starts a step.
  apply(event, id) {
    if (id) this.node.dataset.cursor = id;
    const startsStep = ["delta", "reasoning", "tool_call"].includes(event.type);
    if (startsStep && this.sawResult) this.stepOpen = false;
    switch (event.type) {
      case "delta":
        this.appendText(event.text);
        break;
      case "reasoning":
        this.appendReasoning(event.text);
        break;
      case "tool_call":
        this.addCall(event.id, event.name, event.arguments);
        break;
      case "tool_result":
        if (this.setResult(event.id, event.content, event.isError)) this.sawResult = true;
        break;
      case "approval_request":
        this.askApproval(event);
        break;
      case "approval":
        this.settleApproval(event.approvalId, event.approved, event.reason);
        break;
      case "file":
        this.addFile(event);
        break;
      case "compaction":
        this.addCompaction(event);
        break;
      case "error":
        this.setError(event.message);
        break;
      case "end":
        this.finish(event.status);
        break;
      default:
    }
  }

  appendText(text) {
    const step = this.step;
    step.text += text;
    if (!step.textNode) {
      step.textNode = el("div", { class: "text md" });
      step.node.insertBefore(step.textNode, step.tools);
    }
    this.schedule(step);
  }

  appendReasoning(text) {
    const step = this.step;
    step.reasoning += text;
    if (!step.reasoningNode) {
      step.reasoningBody = el("div", { class: "reasoning-text" });
      step.reasoningNode = el("details", { class: "reasoning" }, el("summary", { text: "Reasoning" }), step.reasoningBody);
      step.node.prepend(step.reasoningNode);
    }
    step.reasoningBody.textContent = step.reasoning;
  }

  addCall(id, name, args) {
    const call = (name === "bash" && bashCommand(args)) ? bashCall(id, args) : genericCall(id, name, args);
    this.step.tools.append(call.node);
    if (id) this.calls.set(id, call);
  }

  // The history was compacted before this reply: a quiet line above it.
  addCompaction(event) {
    const tokens = `about ${event.tokensBefore} → ${event.tokensAfter} tokens`;
    let text = `Earlier messages were left out of this reply: their summary failed (${tokens}).`;
    if (event.summarizedThrough && event.model) text = `Earlier messages were summarised to fit the model (${tokens}).`;
    else if (event.summarizedThrough) text = `Earlier messages are no longer sent to the model: none is set to summarise them (${tokens}).`;
    this.node.prepend(el("p", { class: "compaction", text }));
  }

  // A file the run wrote (or deleted): one line per path, the newest write or deletion.
  addFile(file) {
    if (!file || !file.path) return;
    if (!this.fileList) {
      this.fileList = el("ul", { class: "file-list turn-files", "aria-label": "Files" });
      this.node.insertBefore(this.fileList, this.statusLine);
    }
    const node = fileRef(file);
    const before = this.files.get(file.path);
    if (before) before.replaceWith(node);
    else this.fileList.append(node);
    this.files.set(file.path, node);
  }

  // The card of a call that waits for the user: what it would run, and Approve / Deny.
  askApproval({ approvalId, toolCallId, name, arguments: args }) {
    const call = this.calls.get(toolCallId);
    if (!call || this.approvals.has(approvalId)) return;
    const command = name === "bash" && bashCommand(args);
    const shown = command
      ? el("pre", { class: "bash-command" }, el("span", { class: "bash-prompt", "aria-hidden": "true", text: "$ " }),
        document.createTextNode(command.command))
      : el("pre", { class: "approval-args", text: pretty(args) });
    const approve = el("button", { type: "button", class: "primary", text: "Approve" });
    const deny = el("button", { type: "button", class: "danger", text: "Deny" });
    const outcome = el("p", { class: "approval-outcome", role: "status" });
    const card = el("div", { class: "approval", role: "group", "aria-label": `Approve ${name}?`, "data-state": "asked" },
      el("p", { class: "approval-question" }, "Run ", el("span", { class: "tool-name", text: name || "?" }), "?"),
      shown, el("div", { class: "approval-buttons" }, approve, deny), outcome);
    card.dataset.approvalId = approvalId;
    card.call = call;
    approve.addEventListener("click", () => this.decide(card, true));
    deny.addEventListener("click", () => this.decide(card, false));
    call.node.after(card);
    call.state.textContent = "waiting for approval";
    this.approvals.set(approvalId, card);
  }

  async decide(card, approved) {
    if (!this.onDecide || card.dataset.state !== "asked") return;
    card.dataset.state = "sending";
    for (const button of card.querySelectorAll("button")) button.disabled = true;
    try {
      const standing = await this.onDecide(card.dataset.approvalId, approved);
      this.settleApproval(card.dataset.approvalId, standing, "");
    } catch (error) {
      if (card.dataset.state !== "sending") return; // settled meanwhile (its `approval` came)
      card.dataset.state = "asked";
      for (const button of card.querySelectorAll("button")) button.disabled = false;
      card.querySelector(".approval-outcome").textContent = `Not sent: ${error.message}`;
    }
  }

  // Decided (here, in another tab, or denied when it expired): the card says how, once.
  settleApproval(approvalId, approved, reason) {
    const card = this.approvals.get(approvalId);
    if (!card || ["approved", "denied", "ended"].includes(card.dataset.state)) return;
    card.dataset.state = approved ? "approved" : "denied";
    card.querySelector(".approval-buttons").remove();
    const text = approved ? "Approved" : `Denied${reason ? `: ${reason}` : ""}`;
    card.querySelector(".approval-outcome").textContent = text;
    if (card.call.node.dataset.state === "running") card.call.state.textContent = approved ? "running…" : "denied";
  }

  setResult(id, content, isError, label) {
    let call = this.calls.get(id);
    if (!call) return false;
    if (call.bash) {
      const result = bashResult(content);
      if (result) showBashResult(call, result);
      else {
        // Not the bash tool's JSON (an error such as "bash failed: …"): shown as any tool's.
        const generic = genericCall(id, call.name, call.args);
        call.node.replaceWith(generic.node);
        this.calls.set(id, generic);
        call = generic;
      }
    }
    if (!call.bash) call.result.textContent = content ?? "";
    call.node.dataset.state = isError ? "error" : "done";
    call.state.textContent = label || (isError ? "failed" : "done");
    return true;
  }

  // One stored message of this turn's run.
  addStored(m) {
    if (m.role === "tool") {
      const label = m.status === "cancelled" ? "stopped" : undefined;
      this.setResult(m.tool_call_id, m.content, m.status !== "complete", label);
      return;
    }
    this.stepOpen = false;
    this.newStep();
    if (m.content) this.appendText(m.content);
    for (const call of m.tool_calls || []) {
      const fn = call.function || {};
      this.addCall(call.id, fn.name, fn.arguments);
    }
    for (const file of m.files || []) this.addFile(file);
    this.storedStatus = m.status;
    this.node.dataset.messageId = m.id;
  }

  finishStored() {
    const status = { cancelled: "cancelled", error: "error" }[this.storedStatus] || "completed";
    this.finish(status, "no result stored");
  }

  setError(message) {
    this.ensureStatusLine().textContent = `Failed: ${message || "the run failed"}`;
  }

  // Events of this run are missing (no longer kept): the stored reply replaces it at its end.
  noteGap() {
    this.node.dataset.gap = "true";
    this.ensureStatusLine().textContent =
      "The start of this reply is no longer in the stream: it shows whole when it is done.";
  }

  ensureStatusLine() {
    if (!this.statusLine) {
      this.statusLine = el("p", { class: "run-status" });
      this.node.append(this.statusLine);
    }
    return this.statusLine;
  }

  finish(status, missing = "no result") {
    this.flush();
    this.node.dataset.status = status;
    for (const { node, state } of this.calls.values()) {
      if (node.dataset.state === "running") {
        node.dataset.state = "error";
        state.textContent = status === "cancelled" ? "stopped" : missing;
      }
    }
    for (const card of this.approvals.values()) {
      if (card.dataset.state !== "asked" && card.dataset.state !== "sending") continue;
      card.dataset.state = "ended";
      card.querySelector(".approval-buttons").remove();
      card.querySelector(".approval-outcome").textContent = "Not decided: the run ended";
    }
    if (STATUS_TEXT[status] && !(status === "error" && this.statusLine)) {
      this.ensureStatusLine().textContent = STATUS_TEXT[status];
    }
    this.node.removeAttribute("aria-busy");
  }

  schedule(step) {
    this.pendingRender.add(step);
    if (this.pendingRender.size > 1 || this.frame) return;
    if (document.hidden) {
      this.flush();
      return;
    }
    this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.frame = null;
    for (const step of this.pendingRender) step.textNode.innerHTML = renderMarkdown(step.text);
    this.pendingRender.clear();
  }
}

// The arguments on one short line: {"expression": "2+2"} → expression: 2+2
function brief(args) {
  let text = String(args ?? "");
  try {
    const parsed = JSON.parse(text);
    if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) {
      text = Object.entries(parsed).map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ");
    }
  } catch {
    // not JSON: shown as it is
  }
  return shorten(text);
}

function shorten(text) {
  return text.length > 60 ? `${text.slice(0, 59)}…` : text;
}

function pretty(args) {
  try {
    return JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    return String(args ?? "");
  }
}

// A tool call as any tool's: folded, its arguments and (once it comes) its result as text.
function genericCall(id, name, args) {
  const state = el("span", { class: "tool-state", text: "running…" });
  const summary = el("summary", {}, el("span", { class: "tool-label", text: "Tool" }), " ",
    el("span", { class: "tool-name", text: name || "?" }), " ",
    el("code", { class: "tool-brief", text: brief(args) }), " ", state);
  const result = el("pre", { class: "tool-result" });
  const node = el("details", { class: "tool", "data-call-id": id || "", "data-state": "running" }, summary,
    el("p", { class: "tool-heading", text: "Arguments" }), el("pre", { class: "tool-args", text: pretty(args) }),
    el("p", { class: "tool-heading", text: "Result" }), result);
  return { node, state, result, name, args };
}

// The `bash` tool (turnstream/agents/sandbox_tools.py) shows as a terminal would: open, its
// command after a `$ ` prompt, then the output, the exit code and the files the command
// changed. Its arguments are {"command": "…", "timeout"?: n}; anything else: null.
function bashCommand(args) {
  try {
    const parsed = JSON.parse(args);
    if (parsed && typeof parsed === "object" && typeof parsed.command === "string") return parsed;
  } catch {
    // not JSON: not a command
  }
  return null;
}

function bashCall(id, args) {
  const { command, timeout } = bashCommand(args);
  const state = el("span", { class: "tool-state", text: "running…" });
  const summary = el("summary", {}, el("span", { class: "tool-label", text: "Tool" }), " ",
    el("span", { class: "tool-name", text: "bash" }), " ",
    el("code", { class: "tool-brief", text: shorten(command.split("\n")[0]) }), " ", state);
  const prompt = el("span", { class: "bash-prompt", "aria-hidden": "true", text: "$ " });
  const commandNode = el("pre", { class: "bash-command" }, prompt, document.createTextNode(command));
  const output = el("div", { class: "bash-output" });
  output.hidden = true;
  const node = el("details", { class: "tool bash", open: "", "data-call-id": id || "", "data-state": "running" },
    summary, commandNode);
  if (typeof timeout === "number") node.append(el("p", { class: "bash-timeout", text: `timeout ${timeout} s` }));
  node.append(output);
  return { node, state, output, bash: true, name: "bash", args };
}

// The bash tool's result, {exitCode, stdout, stderr, limit, files, notStored, filesError?},
// parsed; null when the content is anything else (an error such as "bash failed: …").
function bashResult(content) {
  let r;
  try {
    r = JSON.parse(content);
  } catch {
    return null;
  }
  const isText = (v) => typeof v === "string";
  const list = (v, item) => v === undefined || (Array.isArray(v) && v.every((e) => e && typeof e === "object" && item(e)));
  const ok = r && typeof r === "object" && !Array.isArray(r)
    && (r.exitCode === null || Number.isInteger(r.exitCode))
    && isText(r.stdout) && isText(r.stderr)
    && (r.limit === undefined || r.limit === null || isText(r.limit))
    && list(r.files, (f) => isText(f.path) && (f.change === "written" || f.change === "deleted"))
    && list(r.notStored, (f) => isText(f.path) && (f.why === undefined || f.why === null || isText(f.why)))
    && (r.filesError === undefined || r.filesError === null || isText(r.filesError));
  return ok ? r : null;
}

function showBashResult(call, r) {
  const parts = [];
  if (r.stdout) parts.push(el("p", { class: "visually-hidden", text: "Output" }), el("pre", { class: "bash-stdout", text: r.stdout }));
  if (r.stderr) parts.push(el("p", { class: "visually-hidden", text: "Errors (stderr)" }), el("pre", { class: "bash-stderr", text: r.stderr }));
  if (!r.stdout && !r.stderr) parts.push(el("p", { class: "bash-empty", text: "no output" }));
  const status = el("p", { class: "bash-status" });
  if (r.exitCode === null) {
    status.append(el("span", { class: "bash-exit", "data-kind": "stopped", text: `stopped: ${r.limit || "no exit code"}` }));
  } else {
    const kind = r.exitCode === 0 ? "ok" : "failed";
    status.append(el("span", { class: "bash-exit", "data-kind": kind, text: `exit code ${r.exitCode}` }));
    if (r.limit) status.append(" ", el("span", { class: "bash-limit", text: `stopped: ${r.limit}` }));
  }
  parts.push(status);
  const files = r.files || [];
  const notStored = r.notStored || [];
  if (files.length || notStored.length) {
    const items = files.map((f) => el("li", { class: "bash-file", "data-change": f.change },
      el("span", { class: "bash-path", text: f.path }), " ", el("span", { class: "bash-change", text: f.change })));
    for (const f of notStored) {
      items.push(el("li", { class: "bash-file", "data-change": "not-stored" },
        el("span", { class: "bash-path", text: f.path }), " ",
        el("span", { class: "bash-change", text: f.why ? `not stored: ${f.why}` : "not stored" })));
    }
    parts.push(el("ul", { class: "bash-files", "aria-label": "Files the command changed" }, ...items));
  }
  if (r.filesError) parts.push(el("p", { class: "bash-files-error", text: `Files not stored: ${r.filesError}` }));
  call.output.replaceChildren(...parts);
  call.output.hidden = false;
}

// Stored messages → nodes: user messages, and one TurnView per run (session_id).
export function renderHistory(messages) {
  const nodes = [];
  const turns = [];
  let turn = null;
  for (const m of messages) {
    if (m.role === "user") {
      turn = null;
      nodes.push(userMessage(m.content, { files: m.files }));
    } else if (m.role === "assistant" || m.role === "tool") {
      if (!turn || (m.session_id && turn.node.dataset.sessionId !== m.session_id)) {
        turn = new TurnView(m.session_id);
        turns.push(turn);
        nodes.push(turn.node);
      }
      turn.addStored(m);
    } else {
      turn = null;
      nodes.push(el("p", { class: "msg note", text: `${m.role}: ${m.content ?? ""}` }));
    }
  }
  for (const t of turns) t.finishStored();
  return nodes;
}
