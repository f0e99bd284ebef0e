// A client written against the types openapi-typescript generates from turnstream's
// OpenAPI document (`./api.js`, made by tests/api/test_openapi_typescript.py): it creates a
// conversation, sends a message and handles a 409. Only type-checked (`tsc --noEmit`): if
// the document stops declaring what this relies on, the check fails.
import type { components, paths } from "./api.js";

type Conversations = paths["/api/v1/conversations"]["post"];
type Message = paths["/api/v1/conversations/{cid}/message/"]["post"];
type Conversation = Conversations["responses"][201]["content"]["application/json"];
type MessageJson = NonNullable<Message["requestBody"]>["content"]["application/json"];
type Reply = Message["responses"][200]["content"]["application/json"];
type Conflict = Message["responses"][409]["content"]["application/json"];
type Limited = Message["responses"][429]["content"]["application/json"];

export type Outcome =
  | { kind: "reply"; sessionId: string; reply: Reply }
  | { kind: "busy"; resume: string }
  | { kind: "retry"; afterSeconds: number; why: Limited["error"] };

export async function sendHello(base: string, token: string): Promise<Outcome> {
  const headers = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
  const created = await fetch(`${base}/api/v1/conversations`, { method: "POST", headers });
  const conversation: Conversation = await created.json();
  const cid: string = conversation.id;
  const body: MessageJson = { content: "hello" };
  const query: NonNullable<Message["parameters"]["query"]> = { stream: false, multitask: "reject" };
  const sent = await fetch(
    `${base}/api/v1/conversations/${cid}/message/?stream=${query.stream}&multitask=${query.multitask}`,
    { method: "POST", headers, body: JSON.stringify(body) },
  );
  if (sent.status === 409) {
    const conflict: Conflict = await sent.json();
    // `error` tells the two 409s apart; either names the run to follow.
    if (conflict.error === "A run is already active in this conversation") {
      return { kind: "busy", resume: conflict.sessionId };
    }
    const newer: components["schemas"]["ReplyReplaced"] = conflict;
    return { kind: "busy", resume: newer.sessionId };
  }
  if (sent.status === 429) {
    const limited: Limited = await sent.json();
    return { kind: "retry", afterSeconds: Number(sent.headers.get("Retry-After")), why: limited.error };
  }
  const reply: Reply = await sent.json();
  const status: "complete" | "partial" | "cancelled" | "error" = reply.status ?? "complete";
  return { kind: "reply", sessionId: reply.session_id ?? "", reply: { ...reply, status } };
}
