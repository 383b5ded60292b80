// The console's local copy of a session in IndexedDB: what the page shows (the chat list with
// each chat's newest message and unread count, the messages loaded per chat) and the seq
// cursor they reflect. A reload shows it at once and resumes SubscribeMessages from the cursor,
// with no GetSnapshot.
//
// IndexedDB belongs to the page's origin, and the console is served by the chatsync server it
// talks to, so the database is per server; its rows are keyed by session.
//
// Every change is written in one IndexedDB transaction together with the cursor (`head`) it
// brings the session to, so a reload never skips or repeats an event. Changes are queued and
// written in batches (one transaction per batch, as the mirror does with SQLite). A change at
// or below the stored head is already in the store (another tab wrote it) and is skipped.
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { MessageSchema, MessageStatus, type Message } from "./gen/chatsync/v1/chatsync_pb";

const DB_NAME = "chatsync-console";
const DB_VERSION = 1;
const STORES = ["sessions", "chats", "windows", "messages"];

/** A chat as the chat list shows it. */
export interface ChatRow {
  chatId: string;
  name: string;
  /** The seq of its last activity (the list's order). */
  activity: bigint;
  unread: number;
  preview: Message | null;
}

/** The messages loaded of one chat: every message from `boundary` (its oldest seq) on. */
export interface ChatWindow {
  chatId: string;
  messages: Message[];
  boundary: bigint;
  /** Whether older messages exist on the server (ListMessages pages them in). */
  hasOlder: boolean;
}

/** What one stream event (or a page of messages) changed, in the order the page applied it. */
export interface Change {
  /** The event's seq: the cursor after it. Absent for changes that are not events. */
  seq?: bigint;
  /** Chat rows as they are now. */
  chats?: ChatRow[];
  /** Messages as they are now (created or updated); kept when inside their chat's window. */
  messages?: Message[];
  /** Status changes of messages. */
  statuses?: { messageId: bigint; status: MessageStatus }[];
  /** A loaded window: its bounds, and messages to add to it. */
  window?: ChatWindow;
}

/** What a reload starts from. */
export interface Stored {
  source: string;
  head: bigint;
  chats: ChatRow[];
}

const RANK: Record<number, number> = {
  [MessageStatus.PENDING]: 0,
  [MessageStatus.SENT]: 1,
  [MessageStatus.DELIVERED]: 2,
  [MessageStatus.READ]: 3,
  [MessageStatus.FAILED]: 0,
};

/** The server's rule: statuses only move forward; FAILED is terminal and follows PENDING. */
export function advances(current: MessageStatus, next: MessageStatus): boolean {
  if (current === MessageStatus.UNSPECIFIED) return next !== MessageStatus.UNSPECIFIED;
  if (current === MessageStatus.FAILED) return false;
  if (next === MessageStatus.FAILED) return current === MessageStatus.PENDING;
  return (RANK[next] ?? 0) > (RANK[current] ?? 0);
}

interface SessionRecord {
  session: string;
  source: string;
  head: string;
}
interface ChatRecord {
  session: string;
  chatId: string;
  name: string;
  activity: string;
  unread: number;
  preview: Uint8Array | null;
}
interface WindowRecord {
  session: string;
  chatId: string;
  boundary: string;
  hasOlder: boolean;
}
interface MessageRecord {
  session: string;
  id: number;
  chatId: string;
  seq: number;
  bytes: Uint8Array;
}

/** A queued change. Its chat rows are copied when it is made; its messages are the page's
 * objects, whose status may only move forward meanwhile (which the stream's status events do
 * anyway), so they are encoded when written. */
interface Queued {
  seq: bigint | null;
  chats: ChatRow[];
  messages: Message[];
  statuses: { messageId: bigint; status: MessageStatus }[];
  window: WindowRecord | null;
}

const encode = (m: Message) => toBinary(MessageSchema, m);
const decode = (bytes: Uint8Array) => fromBinary(MessageSchema, bytes);

function done(request: IDBRequest): Promise<void>;
function done(tx: IDBTransaction): Promise<void>;
function done(target: IDBRequest | IDBTransaction): Promise<void> {
  return new Promise((ok, fail) => {
    if (target instanceof IDBTransaction) {
      target.oncomplete = () => ok();
      target.onabort = target.onerror = () => fail(target.error ?? new Error("IndexedDB transaction aborted"));
    } else {
      target.onsuccess = () => ok();
      target.onerror = () => fail(target.error);
    }
  });
}

function result<T>(request: IDBRequest<T>): Promise<T> {
  return done(request).then(() => request.result);
}

let opening: Promise<IDBDatabase> | null = null;

function database(): Promise<IDBDatabase> {
  opening ??= new Promise<IDBDatabase>((ok, fail) => {
    const request = indexedDB.open(DB_NAME, DB_VERSION);
    request.onupgradeneeded = () => {
      const db = request.result;
      db.createObjectStore("sessions", { keyPath: "session" });
      db.createObjectStore("chats", { keyPath: ["session", "chatId"] });
      db.createObjectStore("windows", { keyPath: ["session", "chatId"] });
      db.createObjectStore("messages", { keyPath: ["session", "id"] }).createIndex("chat", ["session", "chatId", "seq"]);
    };
    request.onsuccess = () => ok(request.result);
    request.onerror = () => fail(request.error);
    request.onblocked = () => fail(new Error("IndexedDB is blocked by another tab"));
  });
  return opening;
}

/** Every row of one session, in a store keyed [session, …]. */
const rowsOf = (session: string) => IDBKeyRange.bound([session], [session, []]);

/** The sessions this browser keeps chats of (a reload with no session in its route opens one). */
export async function storedSessions(): Promise<{ session: string; source: string }[]> {
  try {
    const db = await database();
    return await result(db.transaction("sessions").objectStore("sessions").getAll() as IDBRequest<SessionRecord[]>);
  } catch {
    return [];
  }
}

/** One session's local copy. */
export class LocalStore {
  private queue: Queued[] = [];
  private holding = false;
  private flushing: Promise<void> = Promise.resolve();
  private scheduled = false;
  private closed = false;
  private lastSeq = 0n;

  private constructor(
    private readonly db: IDBDatabase,
    /** The session this store holds. */
    readonly session: string,
  ) {}

  /** The store of a session, or null where the browser has no IndexedDB (or refuses it). */
  static async open(session: string): Promise<LocalStore | null> {
    try {
      return new LocalStore(await database(), session);
    } catch {
      return null;
    }
  }

  /** The stored chats and their cursor; null when nothing is stored. */
  async load(): Promise<Stored | null> {
    const tx = this.db.transaction(["sessions", "chats"]);
    const record = await result(tx.objectStore("sessions").get(this.session) as IDBRequest<SessionRecord | undefined>);
    if (!record) return null;
    const chats = await result(tx.objectStore("chats").getAll(rowsOf(this.session)) as IDBRequest<ChatRecord[]>);
    this.lastSeq = BigInt(record.head);
    return {
      source: record.source,
      head: BigInt(record.head),
      chats: chats.map((c) => ({
        chatId: c.chatId,
        name: c.name,
        activity: BigInt(c.activity),
        unread: c.unread,
        preview: c.preview ? decode(c.preview) : null,
      })),
    };
  }

  /** The stored messages of a chat, oldest first; null when none were loaded. Reads after
   * every change queued so far. */
  async window(chatId: string): Promise<ChatWindow | null> {
    await this.flush();
    const tx = this.db.transaction(["windows", "messages"]);
    const window = await result(tx.objectStore("windows").get([this.session, chatId]) as IDBRequest<WindowRecord | undefined>);
    if (!window) return null;
    const range = IDBKeyRange.bound([this.session, chatId, -Infinity], [this.session, chatId, Infinity]);
    const rows = await result(tx.objectStore("messages").index("chat").getAll(range) as IDBRequest<MessageRecord[]>);
    return { chatId, messages: rows.map((r) => decode(r.bytes)), boundary: BigInt(window.boundary), hasOlder: window.hasOlder };
  }

  /** Holds changes back until `saveSnapshot` (they apply on top of it). */
  hold(): void {
    this.holding = true;
  }

  /** Replaces the session's rows with a snapshot's, at its head seq, in one transaction; then
   * writes the changes held since `hold`. */
  async saveSnapshot(source: string, head: bigint, chats: ChatRow[]): Promise<void> {
    if (this.closed) return;
    const tx = this.db.transaction(STORES, "readwrite");
    for (const name of STORES.slice(1)) tx.objectStore(name).delete(rowsOf(this.session));
    for (const c of chats) tx.objectStore("chats").put(this.chatRecord(c));
    tx.objectStore("sessions").put({ session: this.session, source, head: String(head) } satisfies SessionRecord);
    this.holding = false;
    this.lastSeq = head;
    await done(tx).catch((error) => console.error("chatsync: local store", error));
    this.schedule();
  }

  /** Queues a change; it is written with its cursor in the next batch's transaction. */
  apply(change: Change): void {
    if (this.closed) return;
    const seq = change.seq && change.seq > 0n ? change.seq : null;
    const chats = (change.chats ?? []).map((c) => ({ ...c }));
    const w = change.window;
    const messages = [...(change.messages ?? []), ...(w?.messages ?? [])];
    const statuses = change.statuses ?? [];
    // Heartbeats at the same seq change nothing.
    if (chats.length + messages.length + statuses.length === 0 && !w && (seq === null || seq <= this.lastSeq)) return;
    if (seq !== null && seq > this.lastSeq) this.lastSeq = seq;
    const window = w ? { session: this.session, chatId: w.chatId, boundary: String(w.boundary), hasOlder: w.hasOlder } : null;
    this.queue.push({ seq, chats, messages, statuses, window });
    this.schedule();
  }

  /** Writes every queued change (unless held); resolves when they are in the database. */
  flush(): Promise<void> {
    if (!this.holding && this.queue.length > 0) {
      const batch = this.queue;
      this.queue = [];
      this.flushing = this.write(batch).catch((error) => console.error("chatsync: local store", error));
    }
    return this.flushing;
  }

  /** Deletes everything stored of the session; this store writes nothing more. */
  async forget(): Promise<void> {
    this.closed = true;
    this.queue = [];
    const tx = this.db.transaction(STORES, "readwrite");
    for (const name of STORES) tx.objectStore(name).delete(name === "sessions" ? this.session : rowsOf(this.session));
    await done(tx);
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    window.setTimeout(() => {
      this.scheduled = false;
      void this.flush();
    }, 0);
  }

  private chatRecord(c: ChatRow): ChatRecord {
    return {
      session: this.session,
      chatId: c.chatId,
      name: c.name,
      activity: String(c.activity),
      unread: c.unread,
      preview: c.preview ? encode(c.preview) : null,
    };
  }

  /** One transaction: read the cursor, the windows and the messages the batch touches, then
   * write the batch's changes above the cursor in order, and the new cursor. */
  private write(batch: Queued[]): Promise<void> {
    if (this.closed) return Promise.resolve();
    const tx = this.db.transaction(STORES, "readwrite");
    const [sessions, chats, windows, messages] = STORES.map((name) => tx.objectStore(name));
    const ids = new Set<number>();
    const chatIds = new Set<string>();
    for (const e of batch) {
      for (const m of e.messages) chatIds.add(m.chatId);
      for (const s of e.statuses) ids.add(Number(s.messageId));
    }
    let record: SessionRecord | undefined;
    const known = new Map<string, WindowRecord>();
    const stored = new Map<number, Message>();
    let reads = 1 + chatIds.size + ids.size;
    const read = () => {
      if (--reads === 0) writeBatch();
    };
    const get = <T>(store: IDBObjectStore, key: IDBValidKey, use: (value: T) => void) => {
      const request = store.get(key);
      request.onsuccess = () => {
        if (request.result !== undefined) use(request.result as T);
        read();
      };
    };
    get<SessionRecord>(sessions, this.session, (r) => (record = r));
    for (const chatId of chatIds) get<WindowRecord>(windows, [this.session, chatId], (w) => known.set(chatId, w));
    for (const id of ids) get<MessageRecord>(messages, [this.session, id], (m) => stored.set(id, decode(m.bytes)));

    const writeBatch = () => {
      // Nothing stored (forgotten, or another tab is taking a new snapshot): no base to change.
      if (!record) return;
      let head = BigInt(record.head);
      const changed = new Map<number, Message>();
      const rows = new Map<string, ChatRow>();
      const inWindow = (m: Message) => {
        const w = known.get(m.chatId);
        return w !== undefined && (!w.hasOlder || m.seq >= BigInt(w.boundary));
      };
      for (const e of batch) {
        if (e.seq !== null && e.seq <= head) continue;
        if (e.seq !== null) head = e.seq;
        if (e.window) {
          known.set(e.window.chatId, e.window);
          windows.put(e.window);
        }
        for (const c of e.chats) rows.set(c.chatId, c);
        for (const m of e.messages) {
          // Whole, as the server has it at or after this change (a replayed creation is at or
          // below the head, and skipped above).
          if (inWindow(m)) changed.set(Number(m.id), m);
        }
        for (const s of e.statuses) {
          const id = Number(s.messageId);
          const m = changed.get(id) ?? stored.get(id);
          if (m && advances(m.status, s.status)) changed.set(id, { ...m, status: s.status });
        }
      }
      for (const c of rows.values()) chats.put(this.chatRecord(c));
      for (const [id, m] of changed) {
        messages.put({ session: this.session, id, chatId: m.chatId, seq: Number(m.seq), bytes: encode(m) } satisfies MessageRecord);
      }
      sessions.put({ ...record, head: String(head) } satisfies SessionRecord);
    };
    return done(tx);
  }
}
