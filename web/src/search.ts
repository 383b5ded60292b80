// The console's search box: SearchMessages over the selected session. Hits are listed in place
// of the chats, with their snippets' matches (between U+0002 and U+0003) shown as <mark>;
// clicking a hit opens its chat. Clearing the box (or Escape) brings the chats back.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { SearchHit } from "./gen/chatsync/v1/chatsync_pb";
import { client, describeError } from "./api";

const MARK_START = "\u0002";
const MARK_END = "\u0003";
const PAGE = 30;

/** A snippet as DOM nodes: plain text, and each match in a <mark>. */
export function snippetNodes(snippet: string): Node[] {
  const nodes: Node[] = [];
  let rest = snippet;
  for (;;) {
    const start = rest.indexOf(MARK_START);
    if (start < 0) break;
    const end = rest.indexOf(MARK_END, start + 1);
    if (end < 0) break;
    if (start > 0) nodes.push(document.createTextNode(rest.slice(0, start)));
    const mark = document.createElement("mark");
    mark.textContent = rest.slice(start + 1, end);
    nodes.push(mark);
    rest = rest.slice(end + 1);
  }
  // Unpaired marks are not shown.
  const tail = rest.replaceAll(MARK_START, "").replaceAll(MARK_END, "");
  if (tail) nodes.push(document.createTextNode(tail));
  return nodes;
}

/** What the search box needs from the page. */
export interface SearchHooks {
  /** The selected session's id, or null. */
  session(): string | null;
  /** Opens a chat of the selected session. */
  open(chatId: string): void;
}

/** The search box's controls. */
export interface Search {
  /** Clears the box and the results, and shows the box for the selected session (if any). */
  reset(): void;
}

const when = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** Wires the search form; `chats` is hidden while results are shown. */
export function initSearch(
  form: HTMLFormElement,
  input: HTMLInputElement,
  results: HTMLElement,
  chats: HTMLElement,
  hooks: SearchHooks,
): Search {
  let generation = 0;

  const clear = () => {
    generation++;
    results.replaceChildren();
    results.hidden = true;
    chats.hidden = false;
  };

  const item = (text: string, cls = "placeholder") => {
    const li = document.createElement("li");
    li.className = cls;
    li.textContent = text;
    return li;
  };

  const hitEl = (hit: SearchHit): HTMLLIElement => {
    const m = hit.message;
    const li = document.createElement("li");
    li.className = "search-hit";
    li.tabIndex = 0;
    li.dataset.chat = m?.chatId ?? "";
    const meta = document.createElement("div");
    meta.className = "search-meta";
    const sent = m?.sentAt ? when.format(timestampDate(m.sentAt)) : "";
    meta.textContent = [m?.chatId, m?.sender, sent].filter(Boolean).join(" · ");
    const text = document.createElement("div");
    text.className = "search-snippet";
    text.append(...snippetNodes(hit.snippet));
    li.append(meta, text);
    const open = () => {
      if (m) hooks.open(m.chatId);
    };
    li.addEventListener("click", open);
    li.addEventListener("keydown", (event) => {
      if (event.key === "Enter") open();
    });
    return li;
  };

  const run = async (query: string, pageToken: string, more: HTMLLIElement | null) => {
    const session = hooks.session();
    if (!session) return;
    const mine = pageToken ? generation : ++generation;
    if (!pageToken) {
      results.replaceChildren(item("Searching…"));
      results.hidden = false;
      chats.hidden = true;
    }
    try {
      const page = await client.searchMessages({ sessionId: session, query, limit: PAGE, pageToken });
      if (mine !== generation) return;
      if (!pageToken) results.replaceChildren();
      more?.remove();
      if (!pageToken && page.hits.length === 0) results.append(item("No messages match."));
      results.append(...page.hits.map(hitEl));
      if (page.nextPageToken) {
        const next = item("More results", "search-more");
        next.tabIndex = 0;
        const load = () => void run(query, page.nextPageToken, next);
        next.addEventListener("click", load);
        next.addEventListener("keydown", (event) => {
          if (event.key === "Enter") load();
        });
        results.append(next);
      }
    } catch (error) {
      if (mine !== generation) return;
      results.replaceChildren(item(describeError(error), "placeholder error"));
    }
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = input.value.trim();
    if (query) void run(query, "", null);
    else clear();
  });
  input.addEventListener("input", () => {
    if (!input.value.trim()) clear();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      input.value = "";
      clear();
    }
  });

  return {
    reset() {
      input.value = "";
      clear();
      form.hidden = hooks.session() === null;
    },
  };
}
