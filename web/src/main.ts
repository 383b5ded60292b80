// The chatsync web console: sessions with their sync status and a Sync button, the chats of
// the open session, a message view paged backwards on scroll, live updates through one
// SubscribeMessages stream, and a send box. Plain TypeScript and the DOM.
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import {
  MessageKind,
  MessageStatus,
  SyncStage,
  SyncState,
  type GetSyncStatusResponse,
  type Message,
  type SubscribeMessagesResponse,
  type SyncProgress,
} from "./gen/chatsync/v1/chatsync_pb";
import { Code } from "@connectrpc/connect";
import {
  asConnectError,
  client,
  describeError,
  isAbort,
  isAuthError,
  newClientMessageId,
  storeToken,
  storedToken,
} from "./api";
import { LiveStream, type LiveState } from "./live";
import { initSearch } from "./search";
import { startWebhooks } from "./webhooks";
import { mediaUrl, resetMedia, sizeLabel } from "./media";
import { advances, LocalStore, storedSessions, type Change, type ChatRow, type Stored } from "./store";

// ---------------------------------------------------------------------------------------------
// DOM helpers

function $(id: string): HTMLElement {
  const el = document.getElementById(id);
  if (!el) throw new Error(`#${id} is missing`);
  return el;
}

type Child = Node | string | null | undefined | false;

function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Record<string, string> = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value);
  }
  for (const child of children) if (child) el.append(child);
  return el;
}

const els = {
  conn: $("conn"),
  banner: $("banner"),
  tokenForm: $("token-form") as HTMLFormElement,
  token: $("token") as HTMLInputElement,
  sessions: $("sessions"),
  chatsTitle: $("chats-title"),
  chats: $("chats"),
  newChat: $("new-chat") as HTMLFormElement,
  newChatId: $("new-chat-id") as HTMLInputElement,
  convHeader: $("conv-header"),
  messages: $("messages"),
  composer: $("composer") as HTMLFormElement,
  text: $("composer-text") as HTMLTextAreaElement,
  send: $("send") as HTMLButtonElement,
  search: $("search") as HTMLFormElement,
  searchQuery: $("search-query") as HTMLInputElement,
  searchResults: $("search-results"),
  forget: $("forget") as HTMLButtonElement,
};

// ---------------------------------------------------------------------------------------------
// Formatting

const READ_ONLY_SOURCES = new Set(["whatsapp-export", "telegram-export"]);
const MAX_SEQ = (1n << 63n) - 1n;
const PAGE = 60;

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "short",
  day: "numeric",
  month: "short",
  year: "numeric",
});
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

function dateOf(ts: Timestamp | undefined): Date | null {
  return ts ? timestampDate(ts) : null;
}

function dayLabel(date: Date): string {
  const today = new Date();
  const startOf = (d: Date) => new Date(d.getFullYear(), d.getMonth(), d.getDate()).getTime();
  const days = Math.round((startOf(today) - startOf(date)) / 86_400_000);
  if (days === 0) return "Today";
  if (days === 1) return "Yesterday";
  return dayFormat.format(date);
}

function relative(date: Date): string {
  const seconds = Math.round((Date.now() - date.getTime()) / 1000);
  if (seconds < 45) return "just now";
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86_400) return `${Math.round(seconds / 3600)} h ago`;
  return dayFormat.format(date);
}

function plural(n: number | bigint, one: string, many = `${one}s`): string {
  return `${n.toLocaleString()} ${n === 1 || n === 1n ? one : many}`;
}

const STATE_LABEL: Record<number, [string, string]> = {
  [SyncState.UNSPECIFIED]: ["Unknown", "unknown"],
  [SyncState.NEVER_SYNCED]: ["Never synced", "never"],
  [SyncState.RUNNING]: ["Syncing", "running"],
  [SyncState.SUCCEEDED]: ["Synced", "succeeded"],
  [SyncState.FAILED]: ["Failed", "failed"],
  [SyncState.INTERRUPTED]: ["Interrupted", "interrupted"],
};

const STAGE_NAME: Record<number, string> = {
  [SyncStage.UNSPECIFIED]: "unknown",
  [SyncStage.STARTED]: "started",
  [SyncStage.CHAT_SAVED]: "chat-saved",
  [SyncStage.MESSAGES_SAVED]: "messages-saved",
  [SyncStage.CHAT_FAILED]: "chat-failed",
  [SyncStage.COMPLETED]: "completed",
  [SyncStage.FAILED]: "failed",
};

/** The status mark: ✓ sent, ✓✓ delivered, blue ✓✓ read, ! failed. */
function markFor(status: MessageStatus): { text: string; name: string; label: string } {
  switch (status) {
    case MessageStatus.PENDING:
      return { text: "◷", name: "pending", label: "Sending" };
    case MessageStatus.SENT:
      return { text: "✓", name: "sent", label: "Sent" };
    case MessageStatus.DELIVERED:
      return { text: "✓✓", name: "delivered", label: "Delivered" };
    case MessageStatus.READ:
      return { text: "✓✓", name: "read", label: "Read" };
    case MessageStatus.FAILED:
      return { text: "!", name: "failed", label: "Failed to send" };
    default:
      return { text: "", name: "unknown", label: "" };
  }
}

/** A stable colour per name (FNV-1a), so people keep their colour across chats. */
function avatarColor(name: string): string {
  let hash = 0x811c9dc5;
  for (const ch of name) hash = Math.imul(hash ^ ch.codePointAt(0)!, 0x01000193) >>> 0;
  return `hsl(${hash % 360} 50% 42%)`;
}

function initials(name: string): string {
  const words = name.replace(/[^\p{L}\p{N} ]/gu, " ").trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return "#";
  return (words[0][0] + (words.length > 1 ? words[words.length - 1][0] : "")).toUpperCase();
}

// ---------------------------------------------------------------------------------------------
// State

interface SyncView {
  controller: AbortController;
  running: boolean;
  frame: SyncProgress | null;
  failures: { chatId: string; error: string }[];
  error: string;
}

interface SessionView {
  id: string;
  source: string;
  status: GetSyncStatusResponse | null;
  sync: SyncView | null;
  /** Runs this page followed to their end: a RUNNING status naming one is stale. */
  finished: Set<string>;
  el: HTMLLIElement;
}

interface ChatView {
  chatId: string;
  name: string;
  activity: bigint;
  unread: number;
  preview: Message | null;
  el: HTMLLIElement;
}

interface OpenChat {
  chatId: string;
  messages: Message[];
  byId: Map<bigint, HTMLElement>;
  /** The oldest seq loaded; older messages come from paging, not from the stream. */
  boundary: bigint;
  hasOlder: boolean;
  loaded: boolean;
  loadingOlder: boolean;
  /** Stream events that arrived before the first page. */
  pending: Message[];
  /** message_updated events that arrived before the first page. */
  pendingUpdates: Message[];
}

interface Current {
  session: SessionView;
  live: LiveStream | null;
  chats: Map<string, ChatView>;
  /** The newest status seen per message id, for messages not loaded yet. */
  statuses: Map<bigint, MessageStatus>;
  open: OpenChat | null;
  /** The session's copy in this browser (IndexedDB); null when unavailable or forgotten. */
  store: LocalStore | null;
  /** The stored seq the page resumed from, until the server's head is checked against it. */
  resumedFrom: bigint | null;
}

const sessions = new Map<string, SessionView>();
let current: Current | null = null;
let authBlocked = false;

const search = initSearch(els.search, els.searchQuery, els.searchResults, els.chats, {
  session: () => current?.session.id ?? null,
  open: (chatId) => {
    if (current) void openChat(current, chatId);
  },
});

// ---------------------------------------------------------------------------------------------
// Banner and connection indicator

function showBanner(text: string, kind: "error" | "info" = "error"): void {
  els.banner.textContent = text;
  els.banner.dataset.kind = kind;
  els.banner.hidden = false;
}

function hideBanner(): void {
  els.banner.hidden = true;
  els.banner.textContent = "";
}

function setConn(state: LiveState | "idle", detail: string): void {
  els.conn.dataset.state = state;
  const label: Record<string, string> = {
    idle: "Not connected",
    connecting: "Connecting…",
    live: "Live",
    reconnecting: "Reconnecting…",
    error: "Not authorised",
  };
  els.conn.querySelector(".conn-label")!.textContent = label[state] ?? state;
  els.conn.title = detail;
}

function authFailure(error: unknown): void {
  authBlocked = true;
  showBanner(describeError(error));
  setConn("error", describeError(error));
  els.token.focus();
}

// ---------------------------------------------------------------------------------------------
// Sessions

/** Whether the server runs a sync of this session that the page has not seen end. */
function serverRunning(s: SessionView): boolean {
  const st = s.status;
  return st?.state === SyncState.RUNNING && !(st.progress && s.finished.has(st.progress.syncId));
}

function renderSession(s: SessionView): void {
  const st = s.status;
  const running = Boolean(s.sync?.running) || serverRunning(s);
  const [label, cls] = running
    ? STATE_LABEL[SyncState.RUNNING]
    : STATE_LABEL[st?.state ?? SyncState.UNSPECIFIED];
  const el = s.el;
  el.dataset.state = cls;
  el.setAttribute("aria-selected", String(current?.session === s));
  el.replaceChildren();

  const head = h(
    "div",
    { class: "session-head" },
    h("span", { class: "session-name", text: s.id }),
    h("span", { class: "source", text: s.source }),
  );
  const state = h("div", { class: "session-state" }, h("span", { class: `pill pill-${cls}`, text: label }));
  const finished = dateOf(st?.finishedAt);
  const started = dateOf(st?.startedAt);
  if (!running && (finished || started)) {
    const when = (finished ?? started)!;
    state.append(h("span", { class: "last-run", title: fullFormat.format(when), text: `last run ${relative(when)}` }));
  }
  const counts = h("div", {
    class: "session-counts",
    text: st ? `${plural(st.chatCount, "chat")} · ${plural(st.messageCount, "message")}` : "…",
  });
  el.append(head, state, counts);

  const frame = s.sync?.frame ?? (running ? st?.progress : null) ?? null;
  if (frame) el.append(renderProgress(frame, s.sync));
  else if (s.sync?.error) el.append(h("div", { class: "sync-error", text: s.sync.error }));
  if (!running && !s.sync && st?.state === SyncState.FAILED && st.lastError) {
    el.append(h("div", { class: "sync-error", text: st.lastError }));
  }

  const button = h("button", {
    class: "btn btn-sync sync-btn",
    type: "button",
    title: "Import every chat and message from the source (what is stored already is skipped)",
    text: running ? "Syncing…" : "Sync",
  });
  button.disabled = Boolean(running);
  button.addEventListener("click", (event) => {
    event.stopPropagation();
    void runSync(s);
  });
  el.append(button);
}

function renderProgress(frame: SyncProgress, sync: SyncView | null): HTMLElement {
  const n = frame.nChats;
  const i = frame.currentChat;
  const done = frame.stage === SyncStage.COMPLETED;
  const failed = frame.stage === SyncStage.FAILED;
  let fraction = 0;
  if (done) fraction = 1;
  else if (n > 0) {
    const withinChat = frame.stage === SyncStage.CHAT_SAVED ? 0.3 : i > 0 ? 1 : 0;
    fraction = Math.min(1, (Math.max(0, i - 1) + withinChat) / n);
  }
  const shown = done ? n : i;
  const parts: string[] = [];
  if (frame.stage === SyncStage.STARTED) parts.push(`Starting · ${plural(n, "chat")}`);
  else parts.push(`${done ? "Done · " : ""}chat ${shown} of ${n}`);
  if (!done && frame.chatId) parts.push(frame.chatId);
  if (done) parts.push(`${plural(frame.totalMessagesSynced, "new message")}`);
  else if (frame.stage !== SyncStage.STARTED) parts.push(plural(frame.messagesSynced, "message"));
  if (failed) parts.splice(0, parts.length, `Failed: ${frame.error}`);

  const box = h("div", {
    class: "sync-progress",
    "data-stage": STAGE_NAME[frame.stage] ?? "unknown",
    "data-sync-id": frame.syncId,
    "data-current": String(shown),
    "data-total": String(n),
  });
  const bar = h("div", {
    class: "bar",
    role: "progressbar",
    "aria-valuemin": "0",
    "aria-valuemax": String(n),
    "aria-valuenow": String(shown),
  });
  const fill = h("div", { class: "fill" });
  fill.style.width = `${(fraction * 100).toFixed(1)}%`;
  bar.append(fill);
  box.append(bar, h("div", { class: "progress-text", text: parts.join(" · ") }));
  const failures = sync?.failures ?? [];
  if (failures.length > 0) {
    const list = h("ul", { class: "sync-failures" });
    for (const f of failures) {
      list.append(h("li", { title: f.error }, h("span", { class: "fail-icon", text: "!" }), `${f.chatId}: ${f.error}`));
    }
    box.append(list);
  }
  if (sync?.error) box.append(h("div", { class: "sync-error", text: sync.error }));
  return box;
}

async function refreshStatus(s: SessionView): Promise<void> {
  try {
    s.status = await client.getSyncStatus({ sessionId: s.id });
  } catch (error) {
    if (isAuthError(error)) authFailure(error);
    return;
  }
  if (current?.session === s) checkResume(current);
  // A run started elsewhere (or before a reload): attach to it to show its progress.
  if (serverRunning(s) && !s.sync?.running) void runSync(s);
  renderSession(s);
}

/** Starts a sync run, or attaches to the running one (the server decides), and follows it. */
async function runSync(s: SessionView): Promise<void> {
  if (s.sync?.running) return;
  const sync: SyncView = { controller: new AbortController(), running: true, frame: null, failures: [], error: "" };
  s.sync = sync;
  renderSession(s);
  try {
    const stream = client.syncChats({ sessionId: s.id, limitPerChat: 0 }, { signal: sync.controller.signal });
    for await (const response of stream) {
      const frame = response.progress;
      if (!frame) continue;
      if (frame.stage === SyncStage.STARTED || (sync.frame && frame.syncId !== sync.frame.syncId)) sync.failures = [];
      if (frame.stage === SyncStage.CHAT_FAILED) sync.failures.push({ chatId: frame.chatId, error: frame.error });
      sync.frame = frame;
      if (frame.stage === SyncStage.COMPLETED || frame.stage === SyncStage.FAILED) s.finished.add(frame.syncId);
      renderSession(s);
    }
  } catch (error) {
    if (!isAbort(error)) {
      sync.error = describeError(error);
      if (isAuthError(error)) authFailure(error);
    }
  }
  sync.running = false;
  renderSession(s);
  await refreshStatus(s);
  if (current?.session === s) await loadSnapshot(current);
}

let webhooksStarted = false;

/** A session's entry in the sessions list; the source comes with the list (or the store). */
function sessionView(id: string, source = ""): SessionView {
  const el = h("li", { class: "session", "data-session": id, tabindex: "0" });
  const s: SessionView = { id, source, status: null, sync: null, finished: new Set(), el };
  el.addEventListener("click", () => void selectSession(s, null));
  el.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && event.target === el) void selectSession(s, null);
  });
  return s;
}

/** Opens the route's session (or, with none in the route, one this browser keeps) from the
 * store at once, before and without the server; then loads the sessions from the server. */
async function start(): Promise<void> {
  const route = readRoute();
  const kept = await storedSessions();
  const found = route.session ? kept.find((k) => k.session === route.session) : kept[0];
  if (found) {
    const s = sessionView(found.session, found.source);
    els.sessions.replaceChildren(s.el);
    renderSession(s);
    void selectSession(s, route.session ? route.chat : null);
  }
  await loadSessions();
}

async function loadSessions(): Promise<void> {
  let list;
  try {
    list = await client.listSessions({});
  } catch (error) {
    if (isAuthError(error)) authFailure(error);
    else showBanner(describeError(error) + (current ? " Showing the chats stored in this browser." : ""));
    if (current) {
      // Opened from this browser's copy: it stays, and its stream says whether it is live.
      els.sessions.replaceChildren(current.session.el);
    } else {
      setConn(isAuthError(error) ? "error" : "idle", describeError(error));
      els.sessions.replaceChildren(
        h("li", { class: "placeholder", text: isAuthError(error) ? "Enter a token to see the sessions." : "No sessions to show." }),
      );
    }
    window.setTimeout(() => {
      if (!authBlocked) void loadSessions();
    }, 3000);
    return;
  }
  if (els.banner.dataset.kind === "error") hideBanner();
  els.sessions.replaceChildren();
  sessions.clear();
  for (const summary of list.sessions) {
    // The session opened from this browser's copy before the list came is the same one.
    const s = current?.session.id === summary.sessionId ? current.session : sessionView(summary.sessionId);
    s.source = summary.source;
    sessions.set(s.id, s);
    els.sessions.append(s.el);
    renderSession(s);
  }
  if (list.sessions.length === 0) {
    els.sessions.append(h("li", { class: "placeholder", text: "This token may not use any session." }));
  }
  await Promise.all([...sessions.values()].map(refreshStatus));
  if (!webhooksStarted) {
    webhooksStarted = true;
    startWebhooks($("webhooks-section"), $("webhooks"));
  }
  const route = readRoute();
  const first =
    (route.session && sessions.get(route.session)) || (current && sessions.get(current.session.id)) || sessions.values().next().value;
  if (first) await selectSession(first, route.session === first.id ? route.chat : null);
  window.setInterval(() => {
    if (authBlocked || document.hidden) return;
    for (const s of sessions.values()) if (!s.sync?.running) void refreshStatus(s);
  }, 5000);
}

// ---------------------------------------------------------------------------------------------
// Routing: #session=ID&chat=ID survives reloads.

function readRoute(): { session: string | null; chat: string | null } {
  const params = new URLSearchParams(location.hash.slice(1));
  return { session: params.get("session"), chat: params.get("chat") };
}

function writeRoute(): void {
  const params = new URLSearchParams();
  if (current) params.set("session", current.session.id);
  if (current?.open) params.set("chat", current.open.chatId);
  history.replaceState(null, "", `#${params.toString()}`);
}

// ---------------------------------------------------------------------------------------------
// The open session: chats and the live stream

async function selectSession(s: SessionView, chatId: string | null): Promise<void> {
  if (current?.session === s) {
    if (chatId) await openChat(current, chatId);
    return;
  }
  current?.live?.stop();
  resetMedia();
  if (infoFor !== null) infoDialog().close();
  const cur: Current = { session: s, live: null, chats: new Map(), statuses: new Map(), open: null, store: null, resumedFrom: null };
  current = cur;
  search.reset();
  for (const other of sessions.values()) other.el.setAttribute("aria-selected", String(other === s));
  els.chatsTitle.textContent = `Chats · ${s.id}`;
  els.chats.replaceChildren(h("li", { class: "placeholder", text: "Loading chats…" }));
  els.newChat.hidden = READ_ONLY_SOURCES.has(s.source);
  renderConversation(cur);
  writeRoute();

  // The chats stored in this browser show at once, and the stream resumes from their seq.
  cur.store = await LocalStore.open(s.id);
  els.forget.hidden = cur.store === null;
  const stored = (await cur.store?.load().catch(() => null)) ?? null;
  if (current !== cur) return;
  if (stored) resume(cur, stored);

  try {
    const status = await client.getSyncStatus({ sessionId: s.id });
    s.status = status;
    renderSession(s);
  } catch (error) {
    if (isAuthError(error)) authFailure(error);
    else showBanner(describeError(error) + (stored ? " Showing the chats stored in this browser." : ""));
    // With stored chats the page goes on from them; the stream retries until the server is back.
    if (!stored) return;
  }
  if (current !== cur) return;
  if (stored) checkResume(cur);
  else await loadSnapshot(cur);
  if (current !== cur) return;
  if (chatId) await openChat(cur, chatId);
}

/** Shows the stored chats and starts the stream after their seq: no snapshot. */
function resume(cur: Current, stored: Stored): void {
  for (const row of stored.chats) {
    const view = upsertChat(cur, row.chatId, row.name, row.activity);
    view.unread = row.unread;
    view.preview = row.preview;
    renderChat(cur, view);
  }
  renderChats(cur);
  cur.resumedFrom = stored.head;
  startLive(cur, stored.head);
}

/** Once the server's head is known: a head behind the stored seq means the server lost what the
 * browser holds (a new database), so the stored chats are dropped and loaded again. */
function checkResume(cur: Current): void {
  const head = cur.session.status?.headSeq;
  const from = cur.resumedFrom;
  if (current !== cur || head === undefined || from === null) return;
  cur.resumedFrom = null;
  if (head < from) {
    void startOver(cur, `The server's head (seq ${head}) is behind the chats stored in this browser (seq ${from}); they were dropped and loaded again.`);
  }
}

/** Drops the session's stored chats and loads it again from a new snapshot, saying why. */
async function startOver(cur: Current, why: string): Promise<void> {
  if (current !== cur) return;
  cur.live?.stop();
  await cur.store?.forget().catch((error) => console.error("chatsync: local store", error));
  if (current !== cur) return;
  current = null;
  showBanner(why, "info");
  await selectSession(cur.session, cur.open?.chatId ?? null);
}

/** The subscription from `afterSeq`, applying every event to the page and the store. */
function startLive(cur: Current, afterSeq: bigint): void {
  cur.live = new LiveStream(cur.session.id, afterSeq, {
    event: (event) => onEvent(cur, event),
    state: (state, detail) => {
      if (current === cur) setConn(state, detail);
    },
    fatal: (error) => authFailure(error),
    gone: (error) =>
      void startOver(cur, `The server cannot continue from the chats stored in this browser (${describeError(error)}); they were dropped and loaded again.`),
  });
  cur.live.start();
}

/** A chat list row as the store keeps it. */
function rowOf(view: ChatView): ChatRow {
  return { chatId: view.chatId, name: view.name, activity: view.activity, unread: view.unread, preview: view.preview };
}

els.forget.addEventListener("click", () => {
  const cur = current;
  const store = cur?.store;
  if (!cur || !store) return;
  cur.store = null;
  els.forget.hidden = true;
  void store.forget().then(
    () => showBanner(`This browser keeps no chats of ${cur.session.id} now; the next load stores them again.`, "info"),
    (error) => showBanner(`Could not forget the local data: ${String(error)}`),
  );
});

/** Messages per chat the first load asks for: the newest, for the chat list's preview. */
const SNAPSHOT_MESSAGES_PER_CHAT = 1;

/** The first load of a session: one GetSnapshot (the chats, newest first, each with its newest
 * message, consistent at one seq), then the live stream from exactly that seq, so nothing is
 * missed and nothing is shown twice. Called again after a sync, it refreshes the chat list
 * and previews; the stream already running goes on. */
async function loadSnapshot(cur: Current): Promise<void> {
  const s = cur.session;
  let head: bigint | null = null;
  // The stream's events wait for the snapshot's rows, and apply on top of them.
  if (cur.live === null) cur.store?.hold();
  try {
    const frames = client.getSnapshot({ sessionId: s.id, limitPerChat: SNAPSHOT_MESSAGES_PER_CHAT });
    for await (const frame of frames) {
      if (current !== cur) return;
      if (head === null && cur.live === null) {
        head = frame.headSeq;
        // Everything after the snapshot's head comes from the stream.
        startLive(cur, head);
      }
      const chat = frame.chat;
      if (!chat) continue;
      const view = upsertChat(cur, chat.chatId, chat.name, chat.seq);
      const last = frame.messages[frame.messages.length - 1];
      // The stream may have set a newer preview meanwhile.
      const seen = view.preview as Message | null;
      if (last && (!seen || last.seq > seen.seq)) {
        setPreview(view, last);
        renderChat(cur, view);
      }
      queueRenderChats(cur);
    }
  } catch (error) {
    if (current !== cur) return;
    if (isAuthError(error)) authFailure(error);
    els.chats.replaceChildren(h("li", { class: "placeholder error", text: describeError(error) }));
    return;
  }
  if (current !== cur) return;
  renderChats(cur);
  const rows = [...cur.chats.values()].map(rowOf);
  if (head !== null) await cur.store?.saveSnapshot(s.source, head, rows);
  else cur.store?.apply({ chats: rows });
}

function upsertChat(cur: Current, chatId: string, name: string, seq: bigint): ChatView {
  let view = cur.chats.get(chatId);
  if (!view) {
    const el = h("li", { class: "chat", "data-chat": chatId, tabindex: "0" });
    el.addEventListener("click", () => void openChat(cur, chatId));
    el.addEventListener("keydown", (event) => {
      if (event.key === "Enter") void openChat(cur, chatId);
    });
    view = { chatId, name: name || chatId, activity: seq, unread: 0, preview: null, el };
    cur.chats.set(chatId, view);
  } else {
    if (name) view.name = name;
    if (seq > view.activity) view.activity = seq;
  }
  renderChat(cur, view);
  return view;
}

function setPreview(view: ChatView, message: Message): void {
  view.preview = message;
  if (message.seq > view.activity) view.activity = message.seq;
}

function renderChat(cur: Current, view: ChatView): void {
  const el = view.el;
  el.setAttribute("aria-selected", String(cur.open?.chatId === view.chatId));
  const avatar = h("span", { class: "avatar", "aria-hidden": "true", text: initials(view.name) });
  avatar.style.background = avatarColor(view.name);
  const preview = view.preview;
  let previewText = "";
  if (preview) {
    const who = preview.fromMe ? "You" : preview.sender;
    previewText = (who && preview.kind !== MessageKind.SYSTEM ? `${who}: ` : "") + messageText(preview);
  }
  const when = dateOf(preview?.sentAt);
  el.replaceChildren(
    avatar,
    h(
      "div",
      { class: "chat-main" },
      h(
        "div",
        { class: "chat-line" },
        h("span", { class: "chat-name", text: view.name }),
        when ? h("time", { class: "chat-time", datetime: when.toISOString(), text: shortWhen(when) }) : null,
      ),
      h(
        "div",
        { class: "chat-line" },
        h("span", { class: "chat-preview", text: previewText || view.chatId }),
        view.unread > 0 ? h("span", { class: "unread", text: String(view.unread) }) : null,
      ),
    ),
  );
}

function shortWhen(date: Date): string {
  const label = dayLabel(date);
  return label === "Today" ? timeFormat.format(date) : label === "Yesterday" ? label : date.toLocaleDateString();
}

function renderChats(cur: Current): void {
  const views = [...cur.chats.values()].sort((a, b) =>
    a.activity === b.activity ? a.name.localeCompare(b.name) : a.activity > b.activity ? -1 : 1,
  );
  if (views.length === 0) {
    const hint = READ_ONLY_SOURCES.has(cur.session.source)
      ? "No chats yet. Press Sync to import them."
      : "No chats yet. Open one below and send a message.";
    els.chats.replaceChildren(h("li", { class: "placeholder", text: hint }));
    return;
  }
  els.chats.replaceChildren(...views.map((v) => v.el));
}

let chatsRenderQueued = false;
function queueRenderChats(cur: Current): void {
  if (chatsRenderQueued) return;
  chatsRenderQueued = true;
  requestAnimationFrame(() => {
    chatsRenderQueued = false;
    if (current === cur) renderChats(cur);
  });
}

let statusRefresh: number | undefined;
function queueStatusRefresh(s: SessionView): void {
  clearTimeout(statusRefresh);
  statusRefresh = window.setTimeout(() => void refreshStatus(s), 700);
}

const pageOpened = Date.now();

/** Whether a message is new since the page opened (imported history is not "unread"). */
function isFresh(m: Message): boolean {
  const sent = dateOf(m.sentAt);
  return sent !== null && sent.getTime() >= pageOpened - 60_000;
}

function onEvent(cur: Current, event: SubscribeMessagesResponse): void {
  if (current !== cur) return;
  // What the event changed, for the store: written with the event's seq in one transaction.
  const change: Change = { seq: event.seq };
  const touched = (chatId: string) => {
    const view = cur.chats.get(chatId);
    if (view) change.chats = [rowOf(view)];
  };
  const e = event.event;
  switch (e.case) {
    case "messageCreated": {
      const message = e.value;
      const view = cur.chats.get(message.chatId) ?? upsertChat(cur, message.chatId, "", message.seq);
      if (!view.preview || message.seq > view.preview.seq) setPreview(view, message);
      const isOpen = cur.open?.chatId === message.chatId;
      if (!isOpen && isFresh(message) && !message.fromMe && message.kind !== MessageKind.SYSTEM) view.unread += 1;
      renderChat(cur, view);
      queueRenderChats(cur);
      if (isOpen) receiveMessage(cur, cur.open!, message);
      queueStatusRefresh(cur.session);
      touched(message.chatId);
      change.messages = [message];
      break;
    }
    case "statusUpdated": {
      const update = e.value;
      const known = cur.statuses.get(update.messageId) ?? MessageStatus.UNSPECIFIED;
      if (advances(known, update.status)) cur.statuses.set(update.messageId, update.status);
      if (cur.open?.chatId === update.chatId) applyStatus(cur, cur.open, update.messageId);
      const view = cur.chats.get(update.chatId);
      if (view?.preview?.id === update.messageId && advances(view.preview.status, update.status)) {
        view.preview.status = update.status;
      }
      touched(update.chatId);
      change.statuses = [{ messageId: update.messageId, status: update.status }];
      break;
    }
    case "messageUpdated": {
      // Edited, deleted, reacted to or a receipt: the message as stored now replaces the shown one.
      applyUpdated(cur, e.value);
      touched(e.value.chatId);
      change.messages = [e.value];
      break;
    }
    case "chatUpdated": {
      upsertChat(cur, e.value.chatId, e.value.name, e.value.seq);
      queueRenderChats(cur);
      if (cur.open?.chatId === e.value.chatId) renderConversationHeader(cur);
      touched(e.value.chatId);
      break;
    }
    default:
      break;
  }
  cur.store?.apply(change);
}

// ---------------------------------------------------------------------------------------------
// The conversation

function messageText(m: Message): string {
  if (m.kind === MessageKind.DELETED) return m.text || "This message was deleted";
  if (m.kind === MessageKind.MEDIA) return m.text || m.attachments.map((a) => a.fileName).join(", ") || "Media";
  return m.text;
}

function renderConversationHeader(cur: Current): void {
  const open = cur.open;
  const view = open ? cur.chats.get(open.chatId) : undefined;
  const readOnly = READ_ONLY_SOURCES.has(cur.session.source);
  els.convHeader.replaceChildren(
    h("div", { class: "conv-title", text: open ? (view?.name ?? open.chatId) : "No chat open" }),
    h("div", {
      class: "conv-sub",
      text: open
        ? `${cur.session.id} · ${open.chatId}${readOnly ? ` · ${cur.session.source} is read-only` : ""}`
        : `${cur.session.id} · ${cur.session.source}`,
    }),
  );
}

function renderConversation(cur: Current): void {
  renderConversationHeader(cur);
  const open = cur.open;
  const readOnly = READ_ONLY_SOURCES.has(cur.session.source);
  els.text.disabled = !open || readOnly;
  els.send.disabled = !open || readOnly || sending;
  els.text.placeholder = !open
    ? "Open a chat to write"
    : readOnly
      ? `${cur.session.source} sessions are read-only`
      : `Message ${open.chatId}`;
  if (!open) {
    els.messages.replaceChildren(h("div", { class: "empty", text: "Pick a chat to read it." }));
  }
}

async function openChat(cur: Current, chatId: string): Promise<void> {
  if (current !== cur) return;
  if (cur.open?.chatId === chatId) return;
  const open: OpenChat = {
    chatId,
    messages: [],
    byId: new Map(),
    boundary: MAX_SEQ,
    hasOlder: true,
    loaded: false,
    loadingOlder: false,
    pending: [],
    pendingUpdates: [],
  };
  cur.open = open;
  composerError("");
  const view = cur.chats.get(chatId);
  if (view?.unread) {
    view.unread = 0;
    cur.store?.apply({ chats: [rowOf(view)] });
  }
  for (const v of cur.chats.values()) renderChat(cur, v);
  renderConversation(cur);
  els.messages.replaceChildren(h("div", { class: "empty", text: "Loading messages…" }));
  writeRoute();
  // The messages stored in this browser (kept current by the stream), else the newest page.
  const saved = (await cur.store?.window(chatId).catch(() => null)) ?? null;
  if (cur.open !== open) return;
  let fetched = false;
  if (saved) {
    open.messages = saved.messages;
    open.boundary = saved.boundary;
    open.hasOlder = saved.hasOlder;
  } else {
    try {
      const page = await client.listMessages({ sessionId: cur.session.id, chatId, beforeSeq: MAX_SEQ, limit: PAGE });
      if (cur.open !== open) return;
      open.messages = page.messages.slice();
      open.boundary = page.messages.length > 0 ? page.nextSeq : MAX_SEQ;
      open.hasOlder = page.hasMore;
      fetched = true;
    } catch (error) {
      if (cur.open !== open) return;
      // A chat that does not exist yet (a new chat in a local session) starts empty.
      open.messages = [];
      open.hasOlder = false;
      fetched = asConnectError(error).code === Code.NotFound;
      if (!fetched) composerError(describeError(error));
    }
  }
  open.loaded = true;
  const pending = open.pending;
  open.pending = [];
  for (const m of pending) mergeMessage(open, m);
  const updates = open.pendingUpdates;
  open.pendingUpdates = [];
  for (const m of updates) {
    const at = open.messages.findIndex((x) => x.id === m.id);
    if (at >= 0) open.messages[at] = m;
  }
  if (fetched) saveWindow(cur, open, open.messages);
  renderMessages(cur, open, "bottom");
  if (!els.text.disabled) els.text.focus();
  await fillViewport(cur, open);
}

/** Whether a streamed message belongs in the loaded window (older ones come from paging). */
function inWindow(open: OpenChat, m: Message): boolean {
  return !open.hasOlder || m.seq >= open.boundary;
}

/** Adds or replaces a message in the sorted list. Returns true when it went to the end. */
function mergeMessage(open: OpenChat, m: Message): boolean | null {
  if (!inWindow(open, m)) return null;
  const list = open.messages;
  const at = list.findIndex((x) => x.id === m.id);
  if (at >= 0) {
    if (advances(list[at].status, m.status)) list[at] = m;
    return false;
  }
  if (list.length === 0 || list[list.length - 1].seq < m.seq) {
    list.push(m);
    return true;
  }
  let i = list.length;
  while (i > 0 && list[i - 1].seq > m.seq) i--;
  list.splice(i, 0, m);
  return false;
}

function receiveMessage(cur: Current, open: OpenChat, m: Message): void {
  if (!open.loaded) {
    open.pending.push(m);
    return;
  }
  const existing = open.byId.get(m.id);
  const stuck = nearBottom();
  const appended = mergeMessage(open, m);
  if (appended === null) return;
  if (existing) {
    applyStatus(cur, open, m.id);
    return;
  }
  if (appended) {
    const prev = open.messages[open.messages.length - 2];
    appendMessageEl(cur, open, m, prev);
  } else {
    renderMessages(cur, open, "keep");
  }
  if (stuck || m.fromMe) scrollToBottom();
}

/** A message as stored now (message_updated, or a react/edit/delete answer) replaces the shown
 * one in place: its element, the quotes of it, the chat's preview and the info view. */
function applyUpdated(cur: Current, message: Message): void {
  const view = cur.chats.get(message.chatId);
  if (view?.preview?.id === message.id) {
    setPreview(view, message);
    renderChat(cur, view);
  }
  const open = cur.open;
  if (open?.chatId !== message.chatId) return;
  if (!open.loaded) {
    open.pendingUpdates.push(message);
    return;
  }
  const index = open.messages.findIndex((m) => m.id === message.id);
  if (index < 0) return;
  open.messages[index] = message;
  rerenderMessage(cur, open, message);
  for (const m of open.messages) if (m.replyTo?.messageId === message.id) rerenderMessage(cur, open, m);
  if (infoFor === message.id) renderInfo(cur);
}

function rerenderMessage(cur: Current, open: OpenChat, m: Message): void {
  const old = open.byId.get(m.id);
  if (!old) return;
  const el = messageEl(cur, m);
  old.replaceWith(el);
  open.byId.set(m.id, el);
}

function effectiveStatus(cur: Current, m: Message): MessageStatus {
  const seen = cur.statuses.get(m.id);
  return seen !== undefined && advances(m.status, seen) ? seen : m.status;
}

function applyStatus(cur: Current, open: OpenChat, messageId: bigint): void {
  const el = open.byId.get(messageId);
  const m = open.messages.find((x) => x.id === messageId);
  if (!el || !m) return;
  const status = effectiveStatus(cur, m);
  m.status = status;
  const mark = markFor(status);
  el.dataset.status = mark.name;
  const markEl = el.querySelector<HTMLElement>(".mark");
  if (markEl) {
    markEl.className = `mark mark-${mark.name}`;
    markEl.textContent = mark.text;
    markEl.title = mark.label;
    markEl.setAttribute("aria-label", mark.label);
  }
}

function messageEl(cur: Current, m: Message): HTMLElement {
  const status = effectiveStatus(cur, m);
  m.status = status;
  const sentAt = dateOf(m.sentAt);
  if (m.kind === MessageKind.SYSTEM) {
    return h(
      "div",
      { class: "msg msg-system", "data-id": String(m.id), "data-seq": String(m.seq) },
      h("span", { class: "text", text: m.text }),
      sentAt ? h("time", { datetime: sentAt.toISOString(), title: fullFormat.format(sentAt), text: timeFormat.format(sentAt) }) : null,
    );
  }
  const mark = markFor(status);
  const deleted = m.kind === MessageKind.DELETED;
  const kindClass = m.kind === MessageKind.MEDIA ? " msg-media" : deleted ? " msg-deleted" : "";
  const el = h("div", {
    class: `msg ${m.fromMe ? "msg-out" : "msg-in"}${kindClass}`,
    "data-id": String(m.id),
    "data-seq": String(m.seq),
    "data-status": mark.name,
  });
  if (m.edited) el.dataset.edited = "true";
  const sender = m.fromMe ? "You" : m.sender || "Unknown";
  const senderEl = h("div", { class: "sender", text: sender });
  if (!m.fromMe) senderEl.style.color = avatarColor(sender);
  el.append(senderEl);
  if (!deleted && (m.forwarded || m.frequentlyForwarded)) {
    const label = m.frequentlyForwarded ? "Forwarded many times" : "Forwarded";
    el.append(h("div", { class: "forwarded", text: m.forwardedFrom ? `${label} from ${m.forwardedFrom}` : label }));
  }
  if (!deleted && m.replyTo && (m.replyTo.messageId !== 0n || m.replyTo.providerMessageId)) el.append(quoteEl(cur, m));
  if (!deleted && m.attachments.length > 0) el.append(attachmentsEl(cur, m));
  const text = messageText(m);
  // A file sent without a caption shows the file alone.
  if (!(m.kind === MessageKind.MEDIA && !m.text && m.attachments.length > 0)) {
    const textEl = h("div", { class: "text", text });
    if (deleted && m.deletion) textEl.title = deletionLabel(m);
    el.append(textEl);
  }
  if (m.edited && !deleted && m.earlierTexts.length > 0) {
    el.append(
      h(
        "ol",
        { class: "earlier", hidden: "" },
        ...m.earlierTexts.map((e) => {
          const at = dateOf(e.replacedAt);
          return h("li", { class: "earlier-text", title: at ? `Replaced ${fullFormat.format(at)}` : "" }, e.text);
        }),
      ),
    );
  }
  if (!deleted && m.reactions.length > 0) el.append(reactionsEl(m));
  let editedEl: HTMLElement | null = null;
  if (m.edited && !deleted) {
    const at = dateOf(m.editedAt);
    const earlier = m.earlierTexts.map((e) => `“${e.text}”`).join(", ");
    editedEl = h("button", {
      type: "button",
      class: "edited",
      text: "edited",
      title: `Edited${at ? ` ${fullFormat.format(at)}` : ""}${earlier ? `. Earlier: ${earlier}` : ""}`,
      "aria-expanded": "false",
    });
    editedEl.addEventListener("click", () => {
      const list = el.querySelector<HTMLElement>(".earlier");
      if (!list) return;
      list.hidden = !list.hidden;
      editedEl!.setAttribute("aria-expanded", String(!list.hidden));
    });
  }
  const info = h("button", { type: "button", class: "info-btn", title: "Message info", "aria-label": "Message info", text: "i" });
  info.addEventListener("click", () => openInfo(cur, m.id));
  el.append(
    h(
      "div",
      { class: "meta" },
      editedEl,
      sentAt ? h("time", { datetime: sentAt.toISOString(), title: fullFormat.format(sentAt), text: timeFormat.format(sentAt) }) : null,
      h("span", { class: `mark mark-${mark.name}`, title: mark.label, "aria-label": mark.label, text: mark.text }),
      info,
    ),
  );
  if (canChange(cur, m)) el.append(actionsEl(cur, m));
  return el;
}

function deletionLabel(m: Message): string {
  const at = dateOf(m.deletion?.deletedAt);
  const by = m.deletion?.deletedBy;
  return `Deleted${by ? ` by ${by}` : ""}${at ? ` ${fullFormat.format(at)}` : ""}`;
}

/** The message a reply quotes, when it is loaded. */
function quotedMessage(cur: Current, m: Message): Message | undefined {
  const reply = m.replyTo;
  const open = cur.open;
  if (!reply || !open) return undefined;
  if (reply.messageId !== 0n) return open.messages.find((x) => x.id === reply.messageId);
  return open.messages.find((x) => x.providerMessageId === reply.providerMessageId && x.chatId === m.chatId);
}

function quoteEl(cur: Current, m: Message): HTMLElement {
  const quoted = quotedMessage(cur, m);
  const el = h("blockquote", { class: "quote" });
  if (m.replyTo?.messageId) el.dataset.replyTo = String(m.replyTo.messageId);
  if (!quoted) {
    el.classList.add("quote-missing");
    el.append(h("span", { class: "quote-text", text: "Reply to a message not loaded" }));
    return el;
  }
  const who = quoted.fromMe ? "You" : quoted.sender || "Unknown";
  const sender = h("span", { class: "quote-sender", text: who });
  if (!quoted.fromMe) sender.style.color = avatarColor(who);
  el.append(sender, h("span", { class: "quote-text", text: messageText(quoted) }));
  el.title = "Show the quoted message";
  el.addEventListener("click", () => {
    const target = cur.open?.byId.get(quoted.id);
    if (!target) return;
    target.scrollIntoView({ block: "center", behavior: "smooth" });
    target.classList.remove("flash");
    void target.offsetWidth;
    target.classList.add("flash");
  });
  return el;
}

function isImage(mime: string): boolean {
  return /^image\/(png|jpe?g|gif|webp|avif|bmp|svg\+xml)$/i.test(mime);
}

function attachmentsEl(cur: Current, m: Message): HTMLElement {
  const box = h("div", { class: "attachments" });
  const sessionId = cur.session.id;
  for (const a of m.attachments) {
    const label = `${a.fileName} · ${a.stored ? sizeLabel(a.sizeBytes) : "not stored"}`;
    if (!a.stored || !a.sha256) {
      box.append(h("span", { class: "att att-missing", title: `${a.mimeType}, not stored on the server`, text: label }));
      continue;
    }
    if (isImage(a.mimeType)) {
      const img = h("img", { class: "att-img", alt: a.fileName, title: label, "data-sha256": a.sha256 });
      box.append(img);
      mediaUrl(sessionId, a.sha256, a.mimeType).then(
        (url) => {
          img.src = url;
        },
        (error) => {
          img.replaceWith(h("span", { class: "att att-missing", text: `${a.fileName}: ${describeError(error)}` }));
        },
      );
      continue;
    }
    const link = h("a", {
      class: "att att-file",
      href: "#",
      download: a.fileName,
      title: `${a.mimeType}, ${sizeLabel(a.sizeBytes)}: download`,
      "data-sha256": a.sha256,
    });
    link.append(h("span", { class: "att-icon", "aria-hidden": "true", text: "↓" }), h("span", { class: "att-name", text: a.fileName }), h("span", { class: "att-size", text: sizeLabel(a.sizeBytes) }));
    let ready = false;
    link.addEventListener("click", (event) => {
      if (ready) return;
      event.preventDefault();
      link.classList.add("att-loading");
      mediaUrl(sessionId, a.sha256, a.mimeType).then(
        (url) => {
          ready = true;
          link.classList.remove("att-loading");
          link.href = url;
          link.click();
        },
        (error) => {
          link.classList.remove("att-loading");
          link.title = describeError(error);
        },
      );
    });
    box.append(link);
  }
  return box;
}

function reactorName(sender: string): string {
  return sender || "You";
}

function reactionsEl(m: Message): HTMLElement {
  return h(
    "div",
    { class: "reactions" },
    ...m.reactions.map((r) => {
      const mine = r.reactors.some((x) => x.sender === "");
      return h(
        "span",
        {
          class: `reaction${mine ? " reaction-mine" : ""}`,
          "data-emoji": r.emoji,
          "data-count": String(r.reactors.length),
          title: `${r.emoji} ${r.reactors.map((x) => reactorName(x.sender)).join(", ")}`,
        },
        h("span", { class: "reaction-emoji", text: r.emoji }),
        h("span", { class: "reaction-count", text: String(r.reactors.length) }),
      );
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Reacting, editing and deleting (sources that take them: not the read-only exports)

const QUICK_REACTIONS = ["👍", "❤️", "😂", "😮"];

/** Whether the page offers reactions on the message. */
function canChange(cur: Current, m: Message): boolean {
  return !READ_ONLY_SOURCES.has(cur.session.source) && m.kind !== MessageKind.SYSTEM && m.kind !== MessageKind.DELETED;
}

function actionsEl(cur: Current, m: Message): HTMLElement {
  const bar = h("div", { class: "actions", role: "toolbar", "aria-label": "Message actions" });
  const mine = m.reactions.find((r) => r.reactors.some((x) => x.sender === ""))?.emoji ?? "";
  for (const emoji of QUICK_REACTIONS) {
    const b = h("button", {
      type: "button",
      class: `act act-react${emoji === mine ? " act-on" : ""}`,
      "data-emoji": emoji,
      title: emoji === mine ? "Remove your reaction" : `React with ${emoji}`,
      text: emoji,
    });
    b.addEventListener("click", () => void change(cur, "react", m, emoji === mine ? "" : emoji));
    bar.append(b);
  }
  // Only the session's own messages can be edited or deleted.
  if (m.fromMe) {
    if (m.kind === MessageKind.TEXT || (m.kind === MessageKind.MEDIA && m.text)) {
      const edit = h("button", { type: "button", class: "act act-edit", title: "Edit", "aria-label": "Edit", text: "Edit" });
      edit.addEventListener("click", () => {
        const text = window.prompt("Edit the message", m.text);
        if (text !== null && text.trim() && text !== m.text) void change(cur, "edit", m, text);
      });
      bar.append(edit);
    }
    const del = h("button", { type: "button", class: "act act-delete", title: "Delete for everyone", "aria-label": "Delete for everyone", text: "Delete" });
    del.addEventListener("click", () => {
      if (window.confirm("Delete this message for everyone?")) void change(cur, "delete", m, "");
    });
    bar.append(del);
  }
  return bar;
}

async function change(cur: Current, what: "react" | "edit" | "delete", m: Message, value: string): Promise<void> {
  const base = { sessionId: cur.session.id, messageId: m.id, requestId: newClientMessageId() };
  composerError("");
  try {
    const response =
      what === "react"
        ? await client.reactToMessage({ ...base, emoji: value })
        : what === "edit"
          ? await client.editMessage({ ...base, text: value })
          : await client.deleteMessage(base);
    if (response.message && current === cur) applyUpdated(cur, response.message);
  } catch (error) {
    composerError(`Could not ${what === "react" ? "react" : what}: ${describeError(error)}`);
    if (isAuthError(error)) authFailure(error);
  }
}

// ---------------------------------------------------------------------------------------------
// Message info: receipts per recipient, reactions, edits

let infoFor: bigint | null = null;

function infoDialog(): HTMLDialogElement {
  let dialog = document.getElementById("msg-info") as HTMLDialogElement | null;
  if (!dialog) {
    dialog = h("dialog", { id: "msg-info", class: "msg-info", "aria-labelledby": "msg-info-title" });
    dialog.addEventListener("close", () => {
      infoFor = null;
    });
    dialog.addEventListener("click", (event) => {
      if (event.target === dialog) dialog!.close();
    });
    document.body.append(dialog);
  }
  return dialog;
}

function openInfo(cur: Current, id: bigint): void {
  infoFor = id;
  renderInfo(cur);
  const dialog = infoDialog();
  if (!dialog.open) dialog.showModal();
}

function when(ts: Timestamp | undefined): string {
  const d = dateOf(ts);
  return d ? fullFormat.format(d) : "—";
}

function renderInfo(cur: Current): void {
  const dialog = infoDialog();
  const m = infoFor === null ? undefined : cur.open?.messages.find((x) => x.id === infoFor);
  if (!m) {
    if (dialog.open) dialog.close();
    return;
  }
  dialog.dataset.id = String(m.id);
  const close = h("button", { type: "button", class: "btn btn-quiet info-close", text: "Close" });
  close.addEventListener("click", () => dialog.close());
  const rows = m.receipts.map((r) =>
    h(
      "tr",
      { class: "receipt", "data-recipient": r.recipient },
      h("td", { class: "recipient", text: r.recipient }),
      h("td", { class: "delivered", "data-at": dateOf(r.deliveredAt)?.toISOString() ?? "", text: when(r.deliveredAt) }),
      h("td", { class: "read", "data-at": dateOf(r.readAt)?.toISOString() ?? "", text: when(r.readAt) }),
    ),
  );
  const mark = markFor(m.status);
  dialog.replaceChildren(
    h("h3", { id: "msg-info-title", text: "Message info" }),
    h("p", { class: "info-text", text: messageText(m) }),
    h(
      "dl",
      { class: "info-facts" },
      h("dt", { text: "Sent" }),
      h("dd", { text: when(m.sentAt) }),
      h("dt", { text: "Status" }),
      h("dd", { class: "info-status", text: mark.label || "—" }),
      m.edited ? h("dt", { text: "Edited" }) : null,
      m.edited ? h("dd", { text: `${when(m.editedAt)}${m.earlierTexts.length ? ` · earlier: ${m.earlierTexts.map((e) => `“${e.text}”`).join(", ")}` : ""}` }) : null,
      m.kind === MessageKind.DELETED ? h("dt", { text: "Deleted" }) : null,
      m.kind === MessageKind.DELETED ? h("dd", { text: deletionLabel(m) }) : null,
      m.reactions.length ? h("dt", { text: "Reactions" }) : null,
      m.reactions.length
        ? h("dd", { class: "info-reactions", text: m.reactions.map((r) => `${r.emoji} ${r.reactors.map((x) => reactorName(x.sender)).join(", ")}`).join(" · ") })
        : null,
    ),
    rows.length > 0
      ? h(
          "table",
          { class: "receipts" },
          h("thead", {}, h("tr", {}, h("th", { text: "Recipient" }), h("th", { text: "Delivered" }), h("th", { text: "Read" }))),
          h("tbody", {}, ...rows),
        )
      : h("p", { class: "no-receipts", text: "No per-recipient receipts recorded." }),
    h("div", { class: "info-actions" }, close),
  );
}

function dayKey(m: Message | undefined): string {
  const d = m ? dateOf(m.sentAt) : null;
  return d ? d.toDateString() : "";
}

function dayDivider(m: Message): HTMLElement {
  const d = dateOf(m.sentAt);
  return h("div", { class: "day", text: d ? dayLabel(d) : "" });
}

function appendMessageEl(cur: Current, open: OpenChat, m: Message, prev: Message | undefined): void {
  els.messages.querySelector(".empty")?.remove();
  if (dayKey(prev) !== dayKey(m)) els.messages.append(dayDivider(m));
  const el = messageEl(cur, m);
  open.byId.set(m.id, el);
  els.messages.append(el);
}

function renderMessages(cur: Current, open: OpenChat, scroll: "bottom" | "keep" | "anchor"): void {
  const box = els.messages;
  const fromBottom = box.scrollHeight - box.scrollTop;
  const oldTop = box.scrollTop;
  const nodes: HTMLElement[] = [];
  open.byId.clear();
  if (open.hasOlder) nodes.push(h("div", { class: "older", text: open.loadingOlder ? "Loading older messages…" : "Scroll up for older messages" }));
  else if (open.messages.length > 0) nodes.push(h("div", { class: "older start", text: "Start of the conversation" }));
  let prev: Message | undefined;
  for (const m of open.messages) {
    if (dayKey(prev) !== dayKey(m)) nodes.push(dayDivider(m));
    const el = messageEl(cur, m);
    open.byId.set(m.id, el);
    nodes.push(el);
    prev = m;
  }
  if (open.messages.length === 0) {
    const readOnly = READ_ONLY_SOURCES.has(cur.session.source);
    nodes.push(h("div", { class: "empty", text: readOnly ? "No messages in this chat yet." : "No messages yet. Say hello!" }));
  }
  box.replaceChildren(...nodes);
  if (scroll === "bottom") scrollToBottom();
  else if (scroll === "anchor") box.scrollTop = box.scrollHeight - fromBottom;
  else box.scrollTop = oldTop;
}

function nearBottom(): boolean {
  const box = els.messages;
  return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function scrollToBottom(): void {
  els.messages.scrollTop = els.messages.scrollHeight;
}

async function loadOlder(cur: Current, open: OpenChat): Promise<void> {
  if (!open.loaded || !open.hasOlder || open.loadingOlder || cur.open !== open) return;
  open.loadingOlder = true;
  const older = els.messages.querySelector(".older");
  if (older) older.textContent = "Loading older messages…";
  try {
    const page = await client.listMessages({
      sessionId: cur.session.id,
      chatId: open.chatId,
      beforeSeq: open.boundary,
      limit: PAGE,
    });
    if (cur.open !== open) return;
    const known = new Set(open.messages.map((m) => m.id));
    open.messages = [...page.messages.filter((m) => !known.has(m.id)), ...open.messages];
    open.boundary = page.nextSeq;
    open.hasOlder = page.hasMore;
    saveWindow(cur, open, page.messages);
  } catch (error) {
    composerError(describeError(error));
  } finally {
    open.loadingOlder = false;
  }
  if (cur.open === open) renderMessages(cur, open, "anchor");
}

/** Stores the open chat's loaded window, with the messages that were added to it. */
function saveWindow(cur: Current, open: OpenChat, messages: Message[]): void {
  cur.store?.apply({ window: { chatId: open.chatId, boundary: open.boundary, hasOlder: open.hasOlder, messages } });
}

/** Loads older pages until the view can scroll (or the history is complete). */
async function fillViewport(cur: Current, open: OpenChat): Promise<void> {
  while (cur.open === open && open.hasOlder && els.messages.scrollHeight <= els.messages.clientHeight + 40) {
    await loadOlder(cur, open);
  }
}

els.messages.addEventListener("scroll", () => {
  const cur = current;
  if (cur?.open && els.messages.scrollTop < 120) void loadOlder(cur, cur.open);
});

// ---------------------------------------------------------------------------------------------
// Sending

let sending = false;
/** The key of the message being sent: reused on retry of the same text, so it never doubles. */
let outbox: { key: string; chatId: string; text: string } | null = null;

function composerError(text: string): void {
  let el = els.composer.querySelector<HTMLElement>(".composer-error");
  if (!text) {
    el?.remove();
    return;
  }
  if (!el) {
    el = h("div", { class: "composer-error", role: "alert" });
    els.composer.prepend(el);
  }
  el.textContent = text;
}

async function send(): Promise<void> {
  const cur = current;
  const open = cur?.open;
  if (!cur || !open || sending) return;
  const text = els.text.value;
  if (!text.trim()) return;
  if (!outbox || outbox.chatId !== open.chatId || outbox.text !== text) {
    outbox = { key: newClientMessageId(), chatId: open.chatId, text };
  }
  const attempt = outbox;
  sending = true;
  els.send.disabled = true;
  composerError("");
  try {
    const response = await client.sendMessage({
      sessionId: cur.session.id,
      chatId: attempt.chatId,
      text: attempt.text,
      clientMessageId: attempt.key,
    });
    if (outbox === attempt) outbox = null;
    if (els.text.value === attempt.text) els.text.value = "";
    autosize();
    const message = response.message;
    if (message && current === cur) {
      const view = cur.chats.get(message.chatId) ?? upsertChat(cur, message.chatId, "", message.seq);
      if (!view.preview || message.seq > view.preview.seq) setPreview(view, message);
      renderChat(cur, view);
      queueRenderChats(cur);
      if (cur.open?.chatId === message.chatId) receiveMessage(cur, cur.open, message);
    }
  } catch (error) {
    composerError(`Not sent: ${describeError(error)} Press Send to retry; it will not be sent twice.`);
    if (isAuthError(error)) authFailure(error);
  } finally {
    sending = false;
    if (current) renderConversation(current);
  }
}

function autosize(): void {
  els.text.style.height = "auto";
  els.text.style.height = `${Math.min(els.text.scrollHeight, 160)}px`;
}

els.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  void send();
});
els.text.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    void send();
  }
});
els.text.addEventListener("input", autosize);

els.newChat.addEventListener("submit", (event) => {
  event.preventDefault();
  const chatId = els.newChatId.value.trim();
  if (!chatId || !current) return;
  els.newChatId.value = "";
  void openChat(current, chatId);
});

// ---------------------------------------------------------------------------------------------
// Token

els.token.value = storedToken();
els.tokenForm.addEventListener("submit", (event) => {
  event.preventDefault();
  storeToken(els.token.value.trim());
  location.reload();
});

// ---------------------------------------------------------------------------------------------

setConn("idle", "No session open");
void start();
