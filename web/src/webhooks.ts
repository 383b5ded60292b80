// The console's webhooks list: GetWebhookStatus, one row per (endpoint, session) the token may
// see, with the same facts as `chatsync webhooks` (state, cursor of head, lag, the last
// attempt, and the error while failing). Shown only when the server has endpoints; refreshed
// every 5 s while the page is visible.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { WebhookState, type WebhookStatus } from "./gen/chatsync/v1/chatsync_pb";
import { client, isAuthError } from "./api";

const REFRESH_MS = 5000;

/** The label (the CLI's words) and the pill class (the session states' colours) of a state. */
function stateLabel(state: WebhookState): [string, string] {
  switch (state) {
    case WebhookState.UP_TO_DATE:
      return ["up to date", "succeeded"];
    case WebhookState.DELIVERING:
      return ["delivering", "running"];
    case WebhookState.RETRYING:
      return ["retrying", "interrupted"];
    case WebhookState.FAILING:
      return ["failing", "failed"];
    default:
      return ["unknown", "unknown"];
  }
}

function row(status: WebhookStatus): HTMLLIElement {
  const [label, cls] = stateLabel(status.state);
  const li = document.createElement("li");
  li.className = `webhook webhook-${cls}`;
  li.dataset.webhook = status.webhookId;
  li.dataset.session = status.sessionId;
  li.dataset.state = label;
  const head = document.createElement("div");
  head.className = "webhook-head";
  head.textContent = `${status.webhookId} → ${status.sessionId}`;
  const state = document.createElement("span");
  state.className = `pill pill-${cls} webhook-state`;
  state.textContent = label;
  head.append(" ", state);
  const facts = document.createElement("div");
  facts.className = "webhook-facts";
  let text = `cursor ${status.cursor} of ${status.headSeq} (lag ${status.lag})`;
  if (status.lastAttemptAt) {
    text += ` · last attempt ${timestampDate(status.lastAttemptAt).toLocaleTimeString()} → ${status.lastStatus || "no answer"}`;
  }
  facts.textContent = text;
  li.append(head, facts);
  if (status.lastError) {
    const error = document.createElement("div");
    error.className = "webhook-error";
    error.textContent = `${status.failures} failed since ${
      status.failingSince ? timestampDate(status.failingSince).toLocaleTimeString() : "?"
    }: ${status.lastError}`;
    li.append(error);
  }
  return li;
}

/** Fills `list` (and shows `section`) from GetWebhookStatus now and every 5 s. A server
 * without endpoints, or a token that may not see any, leaves the section hidden. */
export function startWebhooks(section: HTMLElement, list: HTMLElement): void {
  const refresh = async () => {
    if (document.hidden) return;
    let statuses: WebhookStatus[];
    try {
      statuses = (await client.getWebhookStatus({})).statuses;
    } catch (error) {
      if (isAuthError(error)) section.hidden = true;
      return; // the connection banner already says what is wrong
    }
    section.hidden = statuses.length === 0;
    list.replaceChildren(...statuses.map(row));
  };
  void refresh();
  window.setInterval(() => void refresh(), REFRESH_MS);
}
