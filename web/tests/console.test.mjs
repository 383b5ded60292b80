// The web console end to end: a real `chatsync serve`, Debian's chromium (playwright-core),
// and native gRPC clients (the CLI, buf curl) on the other side.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  cli,
  HELD_MESSAGES,
  launchBrowser,
  makeConfig,
  rpc,
  screenshot,
  shownTexts,
  sleep,
  startServer,
  subscriber,
} from "./harness.mjs";

const BLUE = "rgb(47, 140, 240)";

async function openChatOnPage(page, session, chatId) {
  await page.click(`#sessions [data-session="${session}"] .session-name`);
  await page.waitForSelector(`#chats-title:text("Chats · ${session}")`);
  const existing = await page.$(`#chats [data-chat="${chatId}"]`);
  if (existing) await existing.click();
  else {
    await page.fill("#new-chat-id", chatId);
    await page.press("#new-chat-id", "Enter");
  }
  await page.waitForSelector(`.conv-sub:text("${session} · ${chatId}")`);
  await page.waitForSelector("#composer-text:not([disabled])");
}

async function waitLive(page, timeout = 15_000) {
  await page.waitForSelector('#conn[data-state="live"]', { timeout });
}

describe("the web console", () => {
  let setup;
  let server;
  let browser;
  let page;
  const pageErrors = [];

  before(async () => {
    setup = await makeConfig();
    server = await startServer(setup);
    browser = await launchBrowser();
    page = await browser.context.newPage();
    page.on("pageerror", (error) => pageErrors.push(String(error)));
    await page.goto(`${setup.url}/`);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    setup?.cleanup();
    assert.deepEqual(pageErrors, [], "no uncaught errors on the page");
  });

  it("syncs the demo session with a progress bar, then lists its chats", async () => {
    await page.waitForSelector('#sessions [data-session="demo"] .sync-btn');
    await page.waitForSelector('#sessions [data-session="demo"] .pill-never');
    // Record every progress text the bar shows.
    await page.evaluate(() => {
      window.__progress = [];
      new MutationObserver(() => {
        const text = document.querySelector('[data-session="demo"] .progress-text')?.textContent;
        if (text && window.__progress.at(-1) !== text) window.__progress.push(text);
      }).observe(document.getElementById("sessions"), { subtree: true, childList: true, characterData: true });
    });
    await page.click('#sessions [data-session="demo"] .sync-btn');
    const done = await page.waitForSelector('[data-session="demo"] .sync-progress[data-stage="completed"]', { timeout: 30_000 });
    assert.equal(await done.getAttribute("data-current"), "3");
    assert.equal(await done.getAttribute("data-total"), "3");
    const text = await page.textContent('[data-session="demo"] .progress-text');
    assert.match(text, /3 of 3/);
    assert.match(text, /30 new messages/);
    assert.equal(await page.getAttribute('[data-session="demo"] .bar', "aria-valuenow"), "3");
    const seen = await page.evaluate(() => window.__progress);
    assert.ok(seen.some((t) => /chat \d of 3/.test(t)), `chat i of N shown: ${JSON.stringify(seen)}`);
    await page.waitForSelector('[data-session="demo"] .pill-succeeded');
    await page.waitForFunction(() => /3 chats · 30 messages/.test(document.querySelector('[data-session="demo"] .session-counts')?.textContent ?? ""));

    // The chat list matches ListChats.
    const listed = await rpc(setup, "ListChats", { session_id: "demo" });
    const expected = listed.chats.map((c) => c.name).sort();
    assert.equal(expected.length, 3);
    await page.waitForFunction((n) => document.querySelectorAll("#chats .chat").length === n, 3);
    const names = (await page.$$eval("#chats .chat .chat-name", (els) => els.map((e) => e.textContent))).sort();
    assert.deepEqual(names, expected);
    const ids = (await page.$$eval("#chats .chat", (els) => els.map((e) => e.dataset.chat))).sort();
    assert.deepEqual(ids, listed.chats.map((c) => c.chatId).sort());

    // Open the biggest chat: its messages show with sender, time and mark.
    const counts = await Promise.all(
      listed.chats.map(async (c) => [c.chatId, (await rpc(setup, "ListMessages", { session_id: "demo", chat_id: c.chatId, limit: 1000 })).messages ?? []]),
    );
    const [chatId, messages] = counts.sort((a, b) => b[1].length - a[1].length)[0];
    await page.click(`#chats [data-chat="${chatId}"]`);
    await page.waitForFunction((n) => document.querySelectorAll("#messages .msg").length === n, messages.length);
    const first = await page.$("#messages .msg-in");
    assert.ok(first, "incoming messages are shown");
    assert.ok((await (await first.$(".sender")).textContent()).length > 0, "with a sender");
    assert.match(await (await first.$("time")).textContent(), /\d{1,2}:\d{2}/, "with a time");
    assert.equal(await (await first.$(".mark")).textContent(), "✓", "with a status mark");
    await waitLive(page);
    await screenshot(page, "console-after-sync");
  });

  it("sends from the page once, even on a double click; a native subscriber receives it", async () => {
    const native = subscriber(setup, "notes");
    try {
      await native.waitFor((e) => e.ready);
      await openChatOnPage(page, "notes", "general");
      await page.fill("#composer-text", "hello from the page");
      await page.dblclick("#send");
      const mine = await page.waitForSelector('#messages .msg-out:has(.text:text-is("hello from the page"))');
      assert.equal(await (await mine.$(".mark")).textContent(), "✓");
      assert.equal(await mine.getAttribute("data-status"), "sent");
      const received = await native.waitFor((e) => e.messageCreated?.text === "hello from the page");
      assert.equal(received.messageCreated.chatId, "general");
      await sleep(300);
      const all = (await rpc(setup, "ListMessages", { session_id: "notes", chat_id: "general" })).messages;
      assert.equal(all.filter((m) => m.text === "hello from the page").length, 1, "a double click sends once");
      assert.deepEqual(await shownTexts(page), ["hello from the page"]);
      assert.equal(native.events.filter((e) => e.messageCreated?.text === "hello from the page").length, 1);
      // Enter sends too, and clears the box.
      await page.fill("#composer-text", "second line from the page");
      await page.press("#composer-text", "Enter");
      await page.waitForSelector('#messages .msg:has(.text:text-is("second line from the page"))');
      // The live event can beat the RPC's answer; the box clears when the answer arrives.
      await page.waitForFunction(() => document.querySelector("#composer-text").value === "", null, { timeout: 5000 });
      assert.equal(await page.inputValue("#composer-text"), "");
    } finally {
      native.stop();
    }
  });

  it("shows a message sent through the CLI within a second", async () => {
    await cli(setup, ["send", "notes", "general", "hello from the CLI"]);
    const started = Date.now();
    await page.waitForSelector('#messages .msg:has(.text:text-is("hello from the CLI"))', { timeout: 1000 });
    assert.ok(Date.now() - started <= 1000);
    // A message into another chat adds that chat to the list, with a preview.
    await cli(setup, ["send", "notes", "random", "over in random"]);
    await page.waitForSelector('#chats [data-chat="random"] .chat-preview:text-is("You: over in random")', { timeout: 2000 });
    assert.equal((await shownTexts(page)).includes("over in random"), false, "not in the open chat");
  });

  it("turns the mark blue when the message is read", async () => {
    const el = await page.waitForSelector('#messages .msg:has(.text:text-is("hello from the page"))');
    const id = await el.getAttribute("data-id");
    await rpc(setup, "UpdateMessageStatus", { session_id: "notes", message_id: id, status: "MESSAGE_STATUS_DELIVERED" });
    await page.waitForSelector(`#messages .msg[data-id="${id}"][data-status="delivered"]`, { timeout: 2000 });
    assert.equal(await page.textContent(`#messages .msg[data-id="${id}"] .mark`), "✓✓");
    await rpc(setup, "UpdateMessageStatus", { session_id: "notes", message_id: id, status: "MESSAGE_STATUS_READ" });
    await page.waitForSelector(`#messages .msg[data-id="${id}"][data-status="read"]`, { timeout: 2000 });
    const mark = await page.$(`#messages .msg[data-id="${id}"] .mark`);
    assert.equal(await mark.textContent(), "✓✓");
    assert.equal(await mark.evaluate((e) => getComputedStyle(e).color), BLUE);
    // Changed in place: the same element, still one of it.
    assert.equal(await page.$$eval(`#messages .msg[data-id="${id}"]`, (els) => els.length), 1);
    assert.equal(await el.getAttribute("data-status"), "read");
    await screenshot(page, "console-notes");
  });

  it("reconnects after a server restart and shows every message exactly once", async () => {
    await waitLive(page);
    const before = await shownTexts(page);
    const stopped = await server.stop();
    assert.equal(stopped.code, 0, "graceful shutdown");
    await page.waitForSelector('#conn[data-state="reconnecting"]', { timeout: 5000 });
    // Stay down long enough for the page's backoff to grow, then come back and send at once,
    // while the page is still waiting to reconnect.
    await sleep(2500);
    server = await startServer(setup);
    const sent = ["while away 1", "while away 2", "while away 3"];
    for (const text of sent) await cli(setup, ["send", "notes", "general", text]);
    const state = await page.getAttribute("#conn", "data-state");
    assert.notEqual(state, "live", "the messages went out while the page was reconnecting");
    await waitLive(page, 20_000);
    await page.waitForSelector('#messages .msg:has(.text:text-is("while away 3"))', { timeout: 5000 });
    await cli(setup, ["send", "notes", "general", "after the reconnect"]);
    await page.waitForSelector('#messages .msg:has(.text:text-is("after the reconnect"))', { timeout: 2000 });

    const shown = await shownTexts(page);
    assert.deepEqual(shown, [...before, ...sent, "after the reconnect"], "no gap, no duplicate, in order");
    const stored = (await rpc(setup, "ListMessages", { session_id: "notes", chat_id: "general" })).messages.map((m) => m.text);
    assert.deepEqual(shown, stored);
    const ids = await page.$$eval("#messages .msg", (els) => els.map((e) => e.dataset.id));
    assert.equal(new Set(ids).size, ids.length);
  });

  it("loads a session from one GetSnapshot, then goes live from its head", async () => {
    await cli(setup, ["send", "notes", "snap-a", "first of the snapshot"]);
    await cli(setup, ["send", "notes", "snap-b", "newest of the snapshot"]);
    // A browser of its own: this one keeps the session in IndexedDB, and would resume from it.
    const other = await launchBrowser();
    const fresh = await other.context.newPage();
    fresh.on("pageerror", (error) => pageErrors.push(String(error)));
    const calls = [];
    fresh.on("request", (request) => calls.push(new URL(request.url()).pathname));
    try {
      await fresh.goto(`${setup.url}/#session=notes`);
      // The chat list and each chat's newest message come from the snapshot, newest chat first.
      await fresh.waitForSelector('#chats [data-chat="snap-a"] .chat-preview:text-is("You: first of the snapshot")');
      await fresh.waitForSelector('#chats [data-chat="snap-b"] .chat-preview:text-is("You: newest of the snapshot")');
      const order = await fresh.$$eval("#chats .chat", (els) => els.map((e) => e.dataset.chat));
      assert.deepEqual(order.slice(0, 2), ["snap-b", "snap-a"], "newest chat first");
      assert.equal(calls.filter((p) => p.endsWith("/GetSnapshot")).length, 1, `one snapshot: ${calls}`);
      assert.equal(calls.filter((p) => p.endsWith("/ListChats") || p.endsWith("/ListMessages")).length, 0, "no listing for the first load");
      await waitLive(fresh);
      await cli(setup, ["send", "notes", "snap-a", "after the snapshot"]);
      await fresh.waitForSelector('#chats [data-chat="snap-a"] .chat-preview:text-is("You: after the snapshot")', { timeout: 2000 });
    } finally {
      await other.close();
    }
  });
});

describe("the web console during a long sync", () => {
  const perChat = Number(process.env.CHATSYNC_WEB_BIG ?? 20_000);
  let setup;
  let server;
  let browser;

  before(async () => {
    setup = await makeConfig({ bigMessages: perChat });
    server = await startServer(setup);
    browser = await launchBrowser();
  });

  after(async () => {
    setup?.releaseBig();
    await browser?.close();
    await server?.stop();
    setup?.cleanup();
  });

  it("re-attaches to the running run after a reload, without starting another", async () => {
    const page = await browser.context.newPage();
    await page.goto(`${setup.url}/#session=big`);
    await page.click('#sessions [data-session="big"] .sync-btn');
    // The run is at chat 2 of 4, and will block reading chat 3, a named pipe, until released.
    const running = await page.waitForSelector('[data-session="big"] .sync-progress[data-current="2"]', { timeout: 60_000 });
    const syncId = await running.getAttribute("data-sync-id");
    assert.ok(syncId);

    await page.reload();
    // After the reload the page sees RUNNING and attaches: the same run's frames go on.
    const attached = await page.waitForSelector(`[data-session="big"] .sync-progress[data-sync-id="${syncId}"]`, { timeout: 10_000 });
    assert.equal(await attached.getAttribute("data-current"), "2", "attached to the held run");
    assert.equal(await page.textContent('[data-session="big"] .sync-btn'), "Syncing…");
    await screenshot(page, "console-sync-running");
    await page.waitForSelector('[data-session="big"] .pill-running');
    setup.releaseBig();
    const done = await page.waitForSelector(`[data-session="big"] .sync-progress[data-stage="completed"]`, { timeout: 120_000 });
    assert.equal(await done.getAttribute("data-sync-id"), syncId, "the same run, not a new one");
    assert.equal(await done.getAttribute("data-current"), "4");
    assert.equal(await done.getAttribute("data-total"), "4");
    // The chat that failed is listed with its error; the run went on and succeeded.
    const failures = await page.$$eval('[data-session="big"] .sync-failures li', (els) => els.map((e) => e.textContent));
    assert.equal(failures.length, 1, JSON.stringify(failures));
    assert.match(failures[0], /zz-broken|Zz Broken|broken/i);
    await screenshot(page, "console-sync-failures");
    await page.waitForSelector('[data-session="big"] .pill-succeeded');
    const status = await rpc(setup, "GetSyncStatus", { session_id: "big" });
    assert.equal(status.progress.syncId, syncId, "no second run");
    assert.equal(status.messageCount, String(2 * perChat + HELD_MESSAGES));
    await page.close();
  });
});

describe("the web console with auth", () => {
  const token = "console-test-token-1234";
  let setup;
  let server;
  let browser;

  before(async () => {
    setup = await makeConfig({ tokens: [{ token, sessions: ["notes"] }] });
    server = await startServer(setup);
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    setup?.cleanup();
  });

  it("says a token is needed, then works with one", async () => {
    const page = await browser.context.newPage();
    await page.goto(`${setup.url}/`);
    const banner = await page.waitForSelector("#banner:not([hidden])");
    assert.match(await banner.textContent(), /requires an API token/);
    await page.waitForSelector('#conn[data-state="error"]');
    await screenshot(page, "console-auth-required");

    await page.fill("#token", token);
    await Promise.all([page.waitForNavigation(), page.click('#token-form button[type="submit"]')]);
    await page.waitForSelector('#sessions [data-session="notes"]');
    assert.equal(await page.$('#sessions [data-session="demo"]'), null, "only the token's sessions");
    assert.equal(await page.isHidden("#banner"), true);
    await waitLive(page);
    await openChatOnPage(page, "notes", "secure");
    await page.fill("#composer-text", "sent with a token");
    await page.click("#send");
    await page.waitForSelector('#messages .msg:has(.text:text-is("sent with a token")) .mark-sent');
    const stored = await rpc(setup, "ListMessages", { session_id: "notes", chat_id: "secure" }, { token });
    assert.equal(stored.messages.length, 1);

    // A wrong token is refused with a clear message.
    await page.fill("#token", "a-wrong-token-0000");
    await Promise.all([page.waitForNavigation(), page.click('#token-form button[type="submit"]')]);
    const refused = await page.waitForSelector("#banner:not([hidden])");
    assert.match(await refused.textContent(), /did not accept this token/);
  });
});
