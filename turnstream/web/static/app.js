// The chat page: signing in, the list of conversations, rename and delete, the composer
// and the files attached to the next message (chips above the message box; files dropped
// on the page join them). The open conversation itself is chat.js; the API is api.js.
//
// Signing in: a token in the URL's fragment (`/#token=ts_…`, the link `turnstream serve`
// prints on its first start) is kept in localStorage and removed from the address bar;
// otherwise the sign-in form asks for one. The open conversation is in the fragment too
// (`#c=<id>`), so that a reload or a second tab opens it again.

import { api, ApiError, storedToken, storeToken } from "./api.js";
import { ConversationView, FilesPanel } from "./chat.js";
import { el, humanSize } from "./render.js";

const $ = (id) => document.getElementById(id);
const channel = "BroadcastChannel" in window ? new BroadcastChannel("turnstream") : { postMessage() {} };
const narrow = window.matchMedia("(max-width: 760px)");
const roomy = window.matchMedia("(min-width: 1001px)"); // room for the Files panel beside
let conversations = [];
let view = null;
let attachments = null;
let sending = false;

// Whether the address had a token (now kept, and gone from the address bar).
function takeTokenFromUrl() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (!token) return false;
  storeToken(token.trim());
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  return true;
}

function currentId() {
  return new URLSearchParams(location.hash.slice(1)).get("c");
}

function showSignIn(message = "") {
  view?.open(null);
  $("chat-view").hidden = true;
  $("sign-out").hidden = true;
  $("status").hidden = true;
  $("menu-toggle").hidden = true;
  $("sign-in-view").hidden = false;
  $("sign-in-error").textContent = message;
  $("token-input").value = "";
  $("token-input").focus();
}

async function signIn(event) {
  event.preventDefault();
  storeToken($("token-input").value.trim());
  try {
    await api.conversations();
  } catch (error) {
    storeToken(null);
    const refused = error instanceof ApiError && error.status === 401;
    $("sign-in-error").textContent = refused ? "That token was refused." : `Could not sign in: ${error.message}`;
    return;
  }
  await start();
}

function signOut() {
  storeToken(null);
  history.replaceState(null, "", location.pathname + location.search);
  showSignIn();
}

async function start() {
  $("sign-in-view").hidden = true;
  $("chat-view").hidden = false;
  $("sign-out").hidden = false;
  $("status").hidden = false;
  layout();
  await loadConversations();
  await openCurrent();
}

async function loadConversations() {
  try {
    conversations = (await api.conversations()).items;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) authFailed();
    return;
  }
  const list = $("conversation-list");
  const current = currentId();
  list.replaceChildren(
    ...conversations.map((c) => {
      const link = document.createElement("a");
      link.href = `#c=${encodeURIComponent(c.id)}`;
      link.textContent = c.title;
      if (c.id === current) link.setAttribute("aria-current", "page");
      const item = document.createElement("li");
      item.append(link);
      return item;
    }),
  );
  $("no-conversations").hidden = conversations.length > 0;
  const open = conversations.find((c) => c.id === current);
  if (open && open.title !== view.title) setTitle(open.title);
}

function setTitle(title) {
  view.title = title;
  $("conversation-title").textContent = title;
  document.title = title ? `${title} · turnstream` : "turnstream";
}

async function openCurrent() {
  const cid = currentId();
  let title = "";
  for (const link of $("conversation-list").querySelectorAll("a")) {
    const here = link.getAttribute("href") === `#c=${encodeURIComponent(cid)}`;
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (cid) {
    const known = conversations.find((c) => c.id === cid);
    title = known ? known.title : "";
  }
  $("conversation-actions").hidden = !cid;
  $("composer").hidden = !cid;
  $("rename-form").hidden = true;
  $("conversation-title").hidden = false;
  setTitle(cid ? title || "Conversation" : "");
  if (!cid) $("conversation-title").textContent = "Choose or start a conversation";
  if (narrow.matches) toggleMenu(false);
  if (!cid) attachments.clear();
  await view.open(cid, title);
}

function authFailed() {
  storeToken(null);
  showSignIn("Your token was refused: sign in again.");
}

function gone(cid) {
  if (cid !== currentId()) return;
  history.replaceState(null, "", location.pathname + location.search);
  openCurrent().then(() => view.showNotice("That conversation does not exist, or is not yours."));
  loadConversations();
}

async function newConversation() {
  try {
    const created = await api.create();
    conversations.unshift(created);
    location.hash = `c=${encodeURIComponent(created.id)}`;
    await loadConversations();
    $("composer-input").focus();
  } catch (error) {
    view.failed(error);
  }
}

function startRename() {
  $("rename-input").value = view.title;
  $("conversation-title").hidden = true;
  $("conversation-actions").hidden = true;
  $("rename-form").hidden = false;
  $("rename-input").select();
  $("rename-input").focus();
}

function endRename() {
  $("rename-form").hidden = true;
  $("conversation-title").hidden = false;
  $("conversation-actions").hidden = false;
  $("rename").focus();
}

async function rename(event) {
  event.preventDefault();
  const title = $("rename-input").value.trim();
  if (!title) return;
  try {
    const updated = await api.rename(view.cid, title);
    setTitle(updated.title);
    endRename();
    await loadConversations();
    channel.postMessage({ type: "list" });
  } catch (error) {
    view.failed(error);
  }
}

function confirmDelete() {
  const dialog = $("delete-dialog");
  dialog.returnValue = "";
  dialog.showModal();
}

async function deleteConversation() {
  if ($("delete-dialog").returnValue !== "delete") return;
  const cid = view.cid;
  try {
    await api.remove(cid);
  } catch (error) {
    view.failed(error);
    return;
  }
  channel.postMessage({ type: "deleted", cid });
  history.replaceState(null, "", location.pathname + location.search);
  await openCurrent();
  await loadConversations();
  $("new-conversation").focus();
}

async function submitMessage(event) {
  event.preventDefault();
  const input = $("composer-input");
  const content = input.value;
  if (!content.trim() || view.following || sending) return;
  input.value = "";
  sending = true; // until the upload and the reply are done: one message at a time
  let sent;
  try {
    sent = await view.send(content, { attachments: attachments.items, uploaded: () => attachments.clear() });
  } finally {
    sending = false;
  }
  if (!sent && !input.value) input.value = content;
  await loadConversations();
}

function composerKey(event) {
  // Enter sends, Shift+Enter is a new line; not while an input method composes a character.
  if (event.key !== "Enter" || event.shiftKey || event.isComposing || event.keyCode === 229) return;
  event.preventDefault();
  $("composer").requestSubmit();
}

function toggleMenu(open) {
  const show = open ?? $("menu-toggle").getAttribute("aria-expanded") !== "true";
  $("menu-toggle").setAttribute("aria-expanded", String(show));
  $("sidebar").classList.toggle("open", show);
}

function toggleFiles(open) {
  const show = open ?? $("files-toggle").getAttribute("aria-expanded") !== "true";
  $("files-toggle").setAttribute("aria-expanded", String(show));
  $("files-panel").classList.toggle("open", show);
}

function layout() {
  $("menu-toggle").hidden = !narrow.matches || $("chat-view").hidden;
  if (!narrow.matches) toggleMenu(false);
  toggleFiles(roomy.matches); // beside the conversation when there is room, else on demand
}

function onChannel({ data }) {
  if (!data || !storedToken()) return;
  if (data.type === "run" && data.cid === view.cid && !view.following) view.sync();
  if (data.type === "deleted") gone(data.cid);
  if (data.type === "list" || data.type === "deleted") loadConversations();
}

// The files attached to the next message: chips above the message box, each removable.
class Attachments {
  constructor({ list, input, button }) {
    Object.assign(this, { list, input, button });
    this.files = new Map(); // name -> File: a file of the same name replaces the one before
    button.addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      this.add(input.files);
      input.value = ""; // the same file may be chosen again
    });
    this.render();
  }

  add(files) {
    for (const file of files) this.files.set(file.name, file);
    this.render();
  }

  remove(name) {
    this.files.delete(name);
    this.render();
    (this.list.querySelector("button") || this.button).focus();
  }

  clear() {
    this.files.clear();
    this.render();
  }

  get items() {
    return [...this.files.values()];
  }

  render() {
    this.list.replaceChildren(
      ...this.items.map((file) => {
        const remove = el("button", { type: "button", class: "chip-remove", "aria-label": `Remove ${file.name}`, text: "×" });
        remove.addEventListener("click", () => this.remove(file.name));
        const chip = el("li", { class: "chip" }, el("span", { class: "chip-name", text: file.name }), " ",
          el("span", { class: "chip-size", text: humanSize(file.size) }), remove);
        chip.dataset.name = file.name;
        return chip;
      }),
    );
    this.list.hidden = this.files.size === 0;
  }
}

// Files dropped anywhere on the page go to `attachments` while `accepting()`; the page
// shows where to drop them (body[data-dropping]). Other drops do nothing (the browser
// would open the file in place of the page).
function acceptDrops(attachments, accepting) {
  let depth = 0;
  const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
  const show = (on) => {
    if (on) document.body.dataset.dropping = "true";
    else delete document.body.dataset.dropping;
  };
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth += 1;
    show(accepting());
  });
  document.addEventListener("dragleave", (event) => {
    if (!hasFiles(event)) return;
    depth = Math.max(0, depth - 1);
    if (!depth) show(false);
  });
  document.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = accepting() ? "copy" : "none";
  });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth = 0;
    show(false);
    if (accepting() && event.dataTransfer.files.length) attachments.add(event.dataTransfer.files);
  });
}

function boot() {
  const files = new FilesPanel({
    panel: $("files-panel"),
    list: $("file-list"),
    summary: $("files-summary"),
    empty: $("no-files"),
    toggle: $("files-toggle"),
    log: $("messages"),
  });
  attachments = new Attachments({ list: $("attachments"), input: $("attach-input"), button: $("attach") });
  acceptDrops(attachments, () => !$("composer").hidden);
  view = new ConversationView({
    log: $("messages"),
    status: $("status"),
    statusText: $("status-text"),
    stopButton: $("stop"),
    sendButton: $("send"),
    notice: $("notice"),
    files,
    onAuthFailed: authFailed,
    onGone: gone,
    onChanged: () => {
      loadConversations();
      channel.postMessage({ type: "list" });
    },
    channel,
  });
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("new-conversation").addEventListener("click", newConversation);
  $("rename").addEventListener("click", startRename);
  $("rename-form").addEventListener("submit", rename);
  $("rename-cancel").addEventListener("click", endRename);
  $("rename-input").addEventListener("keydown", (e) => e.key === "Escape" && endRename());
  $("delete").addEventListener("click", confirmDelete);
  $("delete-dialog").addEventListener("close", deleteConversation);
  $("composer").addEventListener("submit", submitMessage);
  $("composer-input").addEventListener("keydown", composerKey);
  $("stop").addEventListener("click", () => view.stop());
  $("menu-toggle").addEventListener("click", () => toggleMenu());
  $("files-toggle").addEventListener("click", () => toggleFiles());
  $("files-close").addEventListener("click", () => {
    toggleFiles(false);
    $("files-toggle").focus();
  });
  narrow.addEventListener("change", layout);
  roomy.addEventListener("change", layout);
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    if ($("sidebar").classList.contains("open")) {
      toggleMenu(false);
      $("menu-toggle").focus();
    } else if (!roomy.matches && $("files-panel").classList.contains("open")) {
      toggleFiles(false); // over the conversation: Escape closes it, as the menu
      $("files-toggle").focus();
    }
  });
  if ("onmessage" in channel) channel.onmessage = onChannel;
  window.addEventListener("hashchange", () => {
    if (takeTokenFromUrl()) start(); // another sign-in link, maybe another user's
    else if (storedToken()) openCurrent();
  });
  takeTokenFromUrl();
  if (storedToken()) start();
  else showSignIn();
}

boot();
