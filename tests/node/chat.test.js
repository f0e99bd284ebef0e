// The AI SDK (npm `ai`, pinned in package.json) against a real `turnstream serve`:
// its own DefaultChatTransport, readUIMessageStream and AbstractChat (the core of
// useChat) talk to POST /api/v1/chat and GET /api/v1/chat/{id}/stream.
//
// Run by tests/api/test_chat_ai_sdk.py, which starts the server with a slow demo
// agent and passes TURNSTREAM_URL, TURNSTREAM_TOKEN and TURNSTREAM_CONVERSATION.
// By hand: `node --test tests/node/` with those three set.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  AbstractChat,
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithApprovalResponses,
  readUIMessageStream,
} from "ai";

const BASE = required("TURNSTREAM_URL");
const TOKEN = required("TURNSTREAM_TOKEN");
const CONVERSATION = required("TURNSTREAM_CONVERSATION");
const AUTH = { Authorization: `Bearer ${TOKEN}` };

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (tests/api/test_chat_ai_sdk.py sets it)`);
  return value;
}

function transport() {
  return new DefaultChatTransport({ api: `${BASE}/api/v1/chat`, headers: AUTH });
}

async function api(path, init = {}) {
  const response = await fetch(`${BASE}/api/v1${path}`, {
    ...init,
    headers: { ...AUTH, ...init.headers },
  });
  assert.ok(response.ok, `${path}: ${response.status} ${await response.clone().text()}`);
  return response.json();
}

async function newConversation() {
  return (await api("/conversations", { method: "POST" })).id;
}

async function storedMessage(cid, id) {
  const { items } = await api(`/conversations/${cid}/messages?limit=500`);
  const found = items.find((m) => m.id === id);
  assert.ok(found, `message ${id} is not among ${JSON.stringify(items.map((m) => m.id))}`);
  return found;
}

// The run's native events (docs/protocol.md), the newest run of the conversation.
async function nativeEvents(cid) {
  const { sessionId } = await api(`/conversations/${cid}/active-session`);
  const response = await fetch(
    `${BASE}/api/v1/conversations/${cid}/resume/${encodeURIComponent(sessionId)}?cursor=0-0`,
    { headers: AUTH },
  );
  assert.equal(response.status, 200);
  return (await response.text())
    .split(/\r?\n/)
    .filter((line) => line.startsWith("data: "))
    .map((line) => JSON.parse(line.slice("data: ".length)));
}

function userMessage(text) {
  return { id: `u-${Date.now()}`, role: "user", parts: [{ type: "text", text }] };
}

function send(cid, text, abortSignal) {
  return transport().sendMessages({
    chatId: cid,
    messages: [userMessage(text)],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal,
  });
}

// The message readUIMessageStream assembles from a whole stream: its last snapshot.
async function assemble(stream) {
  let message;
  for await (const snapshot of readUIMessageStream({
    stream,
    terminateOnError: true,
  })) {
    message = snapshot;
  }
  assert.ok(message, "the stream assembled no message");
  return message;
}

function textOf(message) {
  return message.parts
    .filter((p) => p.type === "text")
    .map((p) => p.text)
    .join("");
}

test("send, abort mid-reply, reconnect: the assembled message is the stored one", async () => {
  const abort = new AbortController();
  const stream = await send(CONVERSATION, "hello from the AI SDK", abort.signal);
  const reader = stream.getReader();
  const seen = [];
  while (seen.filter((c) => c.type === "text-delta").length < 3) {
    const { value, done } = await reader.read();
    assert.ok(!done, `the stream ended before three text-deltas: ${JSON.stringify(seen)}`);
    seen.push(value);
  }
  abort.abort(); // the page goes away mid-reply; the run goes on without it
  await reader.cancel().catch(() => {});
  assert.equal(seen[0].type, "start");
  assert.ok(!seen.some((c) => c.type === "finish"), "the reply was over before the abort");

  const t = transport();
  assert.equal(t.resumeStreamIsReplay, true);
  const resumed = await t.reconnectToStream({ chatId: CONVERSATION });
  assert.ok(resumed, "reconnect answered 204 while the run was going");
  const message = await assemble(resumed);
  assert.equal(message.id, seen[0].messageId);
  assert.equal(message.role, "assistant");
  const stored = await storedMessage(CONVERSATION, message.id);
  assert.equal(stored.status, "complete");
  assert.equal(textOf(message), stored.content);
  assert.ok(textOf(message).startsWith(seen[3].delta), "the replay starts from the beginning");
});

test("after the end, reconnect returns nothing (204)", async () => {
  assert.equal(await transport().reconnectToStream({ chatId: CONVERSATION }), null);
});

test("a /tool turn yields a tool part with its output, then the text", async () => {
  const cid = await newConversation();
  const message = await assemble(await send(cid, "/tool weather in Lisbon"));
  const tools = message.parts.filter((p) => p.type.startsWith("tool-"));
  const native = await nativeEvents(cid);
  const calls = native.filter((e) => e.type === "tool_call");
  const results = native.filter((e) => e.type === "tool_result");
  assert.ok(calls.length > 0, "the run called no tool");
  assert.deepEqual(
    tools.map((p) => [p.type, p.toolCallId, p.state, p.input, p.output]),
    calls.map((call) => [
      `tool-${call.name}`,
      call.id,
      "output-available",
      JSON.parse(call.arguments),
      results.find((r) => r.id === call.id).content,
    ]),
  );
  assert.deepEqual(
    message.parts.map((p) => p.type),
    ["step-start", ...tools.map((p) => p.type), "step-start", "text"],
  );
  const end = native.at(-1);
  assert.equal(end.type, "end");
  assert.equal(message.id, end.messageId);
  assert.equal(textOf(message), (await storedMessage(cid, end.messageId)).content);
});

// The state useChat keeps, without React: enough for AbstractChat.
class MemoryState {
  status = "ready";
  error = undefined;
  messages = [];
  pushMessage = (message) => {
    this.messages = [...this.messages, message];
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (index, message) => {
    this.messages = this.messages.map((m, i) => (i === index ? structuredClone(message) : m));
  };
  snapshot = (thing) => structuredClone(thing);
}

class Chat extends AbstractChat {
  constructor(options) {
    super({ ...options, state: new MemoryState() });
  }
}

test("a run that writes a workspace file yields a file part whose url downloads it", async () => {
  const cid = await newConversation();
  const written = '/tool write_file {"path": "out/report.md", "content": "# hi"}';
  const message = await assemble(await send(cid, written));
  const files = message.parts.filter((p) => p.type === "file");
  assert.equal(files.length, 1, JSON.stringify(message.parts));
  assert.equal(files[0].mediaType, "text/markdown");
  // A signed link: it opens the file without the Authorization header, as <a href> would.
  const download = await fetch(new URL(files[0].url, BASE));
  assert.equal(download.status, 200);
  assert.equal(await download.text(), "# hi");
  assert.match(download.headers.get("content-disposition"), /^attachment;/);
});

test("useChat's core: stop mid-reply, resumeStream(), then the stored reply", async () => {
  const cid = await newConversation();
  const chat = new Chat({ id: cid, transport: transport() });
  const sending = chat.sendMessage({ text: "hello from useChat" });
  // The user's own message is the last one until the reply's first chunk arrives: wait for
  // the reply's text, not any text.
  const replying = () => chat.messages.at(-1)?.role === "assistant";
  await until(() => replying() && textOf(chat.messages.at(-1)).length > 0, "some reply text");
  await chat.stop(); // as a page reload would: the client stops reading, the run goes on
  await sending;
  const partial = textOf(chat.messages.at(-1));

  await chat.resumeStream(); // what useChat({ resume: true }) calls on mount
  assert.equal(chat.status, "ready", String(chat.error));
  assert.deepEqual(
    chat.messages.map((m) => m.role),
    ["user", "assistant"],
  );
  const reply = chat.messages[1];
  const stored = await storedMessage(cid, reply.id);
  assert.equal(textOf(reply), stored.content);
  assert.ok(
    stored.content.startsWith(partial) && stored.content.length > partial.length,
    `partial ${JSON.stringify(partial)}, stored ${JSON.stringify(stored.content)}`,
  );
});

test("a message while a run is going is refused (409) as on the native route", async () => {
  const cid = await newConversation();
  const abort = new AbortController();
  const first = await send(cid, "first", abort.signal);
  const reader = first.getReader();
  await reader.read(); // the run has started
  await assert.rejects(send(cid, "second"), /already active/);
  abort.abort();
  await reader.cancel().catch(() => {});
  const message = await assemble(await transport().reconnectToStream({ chatId: cid }));
  assert.equal(textOf(message), (await storedMessage(cid, message.id)).content);
});

// The server asks before every `calculator` call (TURNSTREAM_TOOL_APPROVAL, set by the
// Python side): useChat's own approval flow answers it, with the answer sent automatically.
async function answered(approved, reason) {
  const cid = await newConversation();
  const chat = new Chat({
    id: cid,
    transport: transport(),
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses,
  });
  await chat.sendMessage({ text: '/tool calculator {"expression": "6*7"}' });
  assert.equal(chat.status, "ready", String(chat.error));
  const asked = chat.messages.at(-1).parts.find((p) => p.type === "tool-calculator");
  assert.equal(asked?.state, "approval-requested", JSON.stringify(chat.messages.at(-1)));
  assert.deepEqual(asked.input, { expression: "6*7" });
  const askedIn = chat.messages.at(-1).id;
  await chat.addToolApprovalResponse({ id: asked.approval.id, approved, reason });
  const settled = () => chat.messages.at(-1).parts.find((p) => p.type === "tool-calculator");
  await until(
    () => chat.status === "ready" && textOf(chat.messages.at(-1)).length > 0,
    "the reply after the answer",
  );
  assert.equal(chat.error, undefined, String(chat.error));
  assert.deepEqual(
    chat.messages.map((m) => m.role),
    ["user", "assistant"],
  );
  const reply = chat.messages[1];
  assert.equal(reply.id, askedIn); // the answer's response went on in the same message
  const stored = await storedMessage(cid, reply.id);
  assert.equal(stored.status, "complete");
  assert.equal(textOf(reply), stored.content);
  return { part: settled(), reply, stored };
}

test("an approved call runs: its output 42, then the reply, in the same message", async () => {
  const { part, reply } = await answered(true);
  assert.equal(part.state, "output-available");
  assert.equal(part.output, "42");
  assert.equal(part.approval.approved, true);
  assert.equal(textOf(reply), "6*7 = 42.");
});

test("a denied call shows as output-denied, and the model goes on", async () => {
  const { part, reply } = await answered(false, "not today");
  assert.equal(part.state, "output-denied");
  assert.deepEqual([part.approval.approved, part.approval.reason], [false, "not today"]);
  assert.match(textOf(reply), /denied/);
});

async function until(check, what, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    assert.ok(Date.now() < deadline, `timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
