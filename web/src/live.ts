// One SubscribeMessages stream per open session, resumed from the last seq after any drop.
//
// The stream starts at a seq the page already reflects (`after_seq`), so the server replays
// everything after it, sends `ready`, then goes live. Every event's seq moves the cursor
// forward; a dropped stream reconnects with backoff from that cursor, so nothing is missed
// and, with the page de-duplicating by message id, nothing shows twice.
import type { SubscribeMessagesResponse } from "./gen/chatsync/v1/chatsync_pb";
import { Code } from "@connectrpc/connect";
import { asConnectError, client, isAbort, isAuthError } from "./api";

/** What the connection indicator shows. */
export type LiveState = "connecting" | "live" | "reconnecting" | "error";

export interface LiveHandlers {
  event(event: SubscribeMessagesResponse): void;
  state(state: LiveState, detail: string): void;
  /** A failure retrying cannot fix (credentials). */
  fatal(error: unknown): void;
  /** The server cannot continue from the cursor: OUT_OF_RANGE (it no longer keeps the changes
   * after it) or INVALID_ARGUMENT (a cursor ahead of its head: its database was replaced). The
   * page must start over from a snapshot. The stream has stopped. */
  gone(error: unknown): void;
}

/** With heartbeats every 15 s by default, this long without a frame means a dead stream;
 * servers with slower heartbeats get three of their intervals. */
const SILENCE_MS = 45_000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 8_000;

export class LiveStream {
  private cursor: bigint;
  private stopped = false;
  private attempt = 0;
  private controller: AbortController | null = null;
  private silenceMs = SILENCE_MS;
  private lastFrame = 0;
  private retryTimer: number | undefined;
  private silenceTimer: number | undefined;
  private readonly onOnline = () => this.retryNow();

  constructor(
    private readonly sessionId: string,
    afterSeq: bigint,
    private readonly handlers: LiveHandlers,
  ) {
    this.cursor = afterSeq;
  }

  /** The last seq the page has processed. */
  get seq(): bigint {
    return this.cursor;
  }

  start(): void {
    window.addEventListener("online", this.onOnline);
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.retryTimer);
    clearTimeout(this.silenceTimer);
    this.controller?.abort();
  }

  private retryNow(): void {
    if (this.stopped || this.retryTimer === undefined) return;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    void this.connect();
  }

  private armSilence(): void {
    clearTimeout(this.silenceTimer);
    const now = Date.now();
    if (this.lastFrame > 0) this.silenceMs = Math.max(this.silenceMs, 3 * (now - this.lastFrame));
    this.lastFrame = now;
    this.silenceTimer = window.setTimeout(() => this.controller?.abort(), this.silenceMs);
  }

  private async connect(): Promise<void> {
    this.retryTimer = undefined;
    if (this.stopped) return;
    this.handlers.state(this.attempt === 0 ? "connecting" : "reconnecting", "Connecting…");
    const controller = new AbortController();
    this.controller = controller;
    this.lastFrame = 0;
    this.armSilence();
    let failure: unknown = null;
    try {
      const stream = client.subscribeMessages(
        { sessionId: this.sessionId, afterSeq: this.cursor },
        { signal: controller.signal },
      );
      for await (const event of stream) {
        if (this.stopped) return;
        this.armSilence();
        this.handlers.event(event);
        if (event.seq > this.cursor) this.cursor = event.seq;
        if (event.event.case === "ready") {
          this.attempt = 0;
          this.handlers.state("live", `Live · seq ${this.cursor}`);
        }
      }
    } catch (error) {
      failure = error;
    } finally {
      clearTimeout(this.silenceTimer);
    }
    if (this.stopped) return;
    if (failure !== null && !isAbort(failure) && isAuthError(failure)) {
      this.handlers.state("error", "Not authorised");
      this.handlers.fatal(failure);
      return;
    }
    const code = failure === null ? null : asConnectError(failure).code;
    if (code === Code.OutOfRange || code === Code.InvalidArgument) {
      this.stop();
      this.handlers.gone(failure);
      return;
    }
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt) * (0.8 + Math.random() * 0.4);
    this.attempt += 1;
    this.handlers.state("reconnecting", `Reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…`);
    this.retryTimer = window.setTimeout(() => void this.connect(), delay);
  }
}
