// The console's only way to talk to chatsync: grpc-web through connect-web, with the code
// protoc-gen-es generates from proto/ (see buf.gen.yaml). The API token, when the server
// has auth, goes out as `authorization: Bearer TOKEN` on every call.
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { ChatSyncService } from "./gen/chatsync/v1/chatsync_pb";

const TOKEN_KEY = "chatsync.console.token";

/** The token the page sends, remembered in this browser. Empty: none. */
export function storedToken(): string {
  try {
    return localStorage.getItem(TOKEN_KEY) ?? "";
  } catch {
    return "";
  }
}

/** Remembers (or, when empty, forgets) the token. */
export function storeToken(token: string): void {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage may be disabled; the token then lasts until the page reloads.
  }
}

let token = storedToken();

const bearer: Interceptor = (next) => async (request) => {
  if (token) request.header.set("authorization", `Bearer ${token}`);
  return next(request);
};

/** Whether the page currently sends a token. */
export function hasToken(): boolean {
  return token !== "";
}

/** The ChatSyncService client over grpc-web, on the page's own origin. */
export const client = createClient(
  ChatSyncService,
  createGrpcWebTransport({ baseUrl: location.origin, interceptors: [bearer] }),
);

/** The error as a ConnectError (network failures become UNAVAILABLE/UNKNOWN). */
export function asConnectError(error: unknown): ConnectError {
  return ConnectError.from(error);
}

/** Whether an error is about credentials, so retrying cannot help. */
export function isAuthError(error: unknown): boolean {
  const code = asConnectError(error).code;
  return code === Code.Unauthenticated || code === Code.PermissionDenied;
}

/** Whether an error is the caller's own cancellation. */
export function isAbort(error: unknown): boolean {
  return asConnectError(error).code === Code.Canceled;
}

/** A sentence for a person, for an error from a call. */
export function describeError(error: unknown): string {
  const e = asConnectError(error);
  switch (e.code) {
    case Code.Unauthenticated:
      return hasToken()
        ? `The server did not accept this token (${e.rawMessage}). Check it in the token field.`
        : "This server requires an API token. Enter it in the token field at the top right.";
    case Code.PermissionDenied:
      return `This token may not do that: ${e.rawMessage}.`;
    case Code.Unavailable:
    case Code.Unknown:
      return `The server cannot be reached (${e.rawMessage || "connection failed"}).`;
    case Code.FailedPrecondition:
      return e.rawMessage;
    default:
      return e.rawMessage || e.message;
  }
}

/** An idempotency key for SendMessage. Works outside secure contexts too. */
export function newClientMessageId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `web-${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
