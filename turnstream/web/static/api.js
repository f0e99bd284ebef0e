// The HTTP API (docs/protocol.md), with the bearer token: small wrappers over fetch().

export class ApiError extends Error {
  constructor(status, body) {
    const text = body && (body.error || (typeof body.detail === "string" ? body.detail : ""));
    super(text || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

const TOKEN_KEY = "turnstream.token";

export function storedToken() {
  return localStorage.getItem(TOKEN_KEY);
}

export function storeToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

// Relative to the page, so that the page also works behind a proxy under a sub-path.
const base = new URL("api/v1/", document.baseURI);

export function url(path, params) {
  const u = new URL(path, base);
  for (const [k, v] of Object.entries(params || {})) u.searchParams.set(k, v);
  return u;
}

export function conversationPath(cid, ...rest) {
  return ["conversations", cid, ...rest].map(encodeURIComponent).join("/");
}

// A request with the token. Resolves to the Response (any status); rejects on a network error.
// `json` is sent as JSON; `body` (a FormData, say) as it is, with the type fetch gives it.
export function request(path, { method = "GET", json, body, params, headers = {}, signal } = {}) {
  const init = { method, signal, body, headers: { Authorization: `Bearer ${storedToken()}`, ...headers } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  }
  return fetch(url(path, params), init);
}

export async function readError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: only the status tells
  }
  const error = new ApiError(response.status, body);
  error.retryAfter = Number(response.headers.get("Retry-After")) || null;
  return error;
}

// A request whose answer is JSON (or 204); any other status is thrown as an ApiError.
export async function call(path, options) {
  const response = await request(path, options);
  if (!response.ok) throw await readError(response);
  return response.status === 204 ? null : response.json();
}

export const api = {
  conversations: () => call("conversations", { params: { limit: 100 } }),
  create: () => call("conversations", { method: "POST", json: {} }),
  rename: (cid, title) => call(conversationPath(cid), { method: "PATCH", json: { title } }),
  remove: (cid) => call(conversationPath(cid), { method: "DELETE" }),
  conversation: (cid) => call(conversationPath(cid)),
  messages: (cid) => call(conversationPath(cid, "messages"), { params: { limit: 500 } }),
  stop: (cid) => call(conversationPath(cid, "stop"), { method: "POST" }),
  // A tool call's approval (docs/approvals.md): {approvalId, approved, sessionId}.
  decide: (cid, approvalId, approved) =>
    call(conversationPath(cid, "approvals", approvalId), { method: "POST", json: { approved } }),
  // 404 means "no run kept": null.
  activeSession: (cid) => orNull(call(conversationPath(cid, "active-session"))),
  taskStatus: (cid) => orNull(call(conversationPath(cid, "task-status"))),
  // The workspace: {items, total, bytes}, each entry with a fresh signed `url`.
  files: (cid) => call(conversationPath(cid, "files")),
  // Files (File objects) in one multipart POST, each under its own name (in NFC, as the
  // workspace wants it: a Mac gives names decomposed): their entries.
  upload: (cid, files) => {
    const form = new FormData();
    for (const file of files) form.append("file", file, file.name.normalize("NFC"));
    return call(conversationPath(cid, "files"), { method: "POST", body: form });
  },
};

async function orNull(promise) {
  try {
    return await promise;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}
