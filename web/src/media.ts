// Attachments' bytes through GetMedia: a stream of chunks gathered into a Blob, then an object
// URL. One fetch per (session, sha256) while the session is open; `reset` revokes them all.
import { client } from "./api";

const urls = new Map<string, Promise<string>>();

/** The bytes of a stored attachment as a Blob (GetMedia's MIME type, else `fallbackType`). */
export async function fetchMedia(sessionId: string, sha256: string, fallbackType: string): Promise<Blob> {
  const chunks: BlobPart[] = [];
  let type = "";
  for await (const frame of client.getMedia({ sessionId, sha256 })) {
    if (!type && frame.mimeType) type = frame.mimeType;
    chunks.push(frame.data);
  }
  return new Blob(chunks, { type: type || fallbackType });
}

/** An object URL for the attachment's bytes, fetched once per session. */
export function mediaUrl(sessionId: string, sha256: string, fallbackType: string): Promise<string> {
  const key = `${sessionId}\u0000${sha256}`;
  let url = urls.get(key);
  if (!url) {
    url = fetchMedia(sessionId, sha256, fallbackType).then((blob) => URL.createObjectURL(blob));
    // A failed fetch is not remembered: the next render tries again.
    url.catch(() => urls.delete(key));
    urls.set(key, url);
  }
  return url;
}

/** Forgets (and revokes) every object URL, when another session opens. */
export function resetMedia(): void {
  for (const url of urls.values()) url.then((u) => URL.revokeObjectURL(u), () => {});
  urls.clear();
}

/** A size for a person. */
export function sizeLabel(bytes: bigint): string {
  const n = Number(bytes);
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
}
