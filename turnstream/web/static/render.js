// Messages on the page. A user message is plain text. An assistant turn (one run) is an
// <article> of steps (docs/protocol.md, "Steps"): each step's reasoning (apart, folded),
// its text (Markdown), and its tool calls as <details>, each with its arguments and result.
// A turn is built from a run's live events (TurnView.apply) or from its stored messages
// (renderHistory): assistant{tool_calls} → tool messages (tool_call_id) → … → the final
// assistant message. Model text goes to the page through textContent or renderMarkdown,
// which escapes it: never as HTML of its own.

import { renderMarkdown } from "./markdown.js";

const STATUS_TEXT = {
  cancelled: "Stopped",
  error: "Failed",
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

export function userMessage(content, { pending = false } = {}) {
  const node = el("article", { class: "msg user", "aria-label": "You" });
  node.append(el("div", { class: "bubble", text: content ?? "" }));
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
    this.stepOpen = false; // the current step may take more text
    this.sawResult = false; // the current step has a tool result: what follows starts a step
    this.pendingRender = new Set();
    this.statusLine = null;
  }

  get step() {
    if (!this.steps.length || !this.stepOpen) this.newStep();
    return this.steps[this.steps.length - 1];
  }

  newStep() {
    const step = { node: el("div", { class: "step" }), text: "", reasoning: "", textNode: null, reasoningNode: null };
    step.tools = el("div", { class: "tools" });
    step.node.append(step.tools);
    this.node.insertBefore(step.node, this.statusLine);
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
    const step = this.step;
    const state = el("span", { class: "tool-state", text: "running…" });
    const summary = el("summary", {}, el("span", { class: "tool-label", text: "Tool" }), " ",
      el("span", { class: "tool-name", text: name || "?" }), " ",
      el("code", { class: "tool-brief", text: brief(args) }), " ", state);
    const result = el("pre", { class: "tool-result" });
    const node = el("details", { class: "tool", "data-call-id": id || "", "data-state": "running" }, summary,
      el("p", { class: "tool-heading", text: "Arguments" }), el("pre", { class: "tool-args", text: pretty(args) }),
      el("p", { class: "tool-heading", text: "Result" }), result);
    step.tools.append(node);
    if (id) this.calls.set(id, { node, state, result });
  }

  setResult(id, content, isError, label) {
    const call = this.calls.get(id);
    if (!call) return false;
    call.result.textContent = content ?? "";
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
  return text.length > 60 ? `${text.slice(0, 59)}…` : text;
}

function pretty(args) {
  try {
    return JSON.stringify(JSON.parse(args), null, 2);
  } catch {
    return String(args ?? "");
  }
}

// Stored messages → nodes: user messages, and one TurnView per run (session_id).
export function renderHistory(messages) {
  const nodes = [];
  const turns = [];
  let turn = null;
  for (const m of messages) {
    if (m.role === "user") {
      turn = null;
      nodes.push(userMessage(m.content));
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
