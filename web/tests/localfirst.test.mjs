// The console's local copy in IndexedDB: a reload shows the stored chats with the server down,
// then resumes SubscribeMessages from the stored seq with no new GetSnapshot; "Forget local
// data" clears it; a server whose head is behind the stored seq makes the page start over.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cli, launchBrowser, makeConfig, root, rpc, screenshot, shownTexts, startServer } from "./harness.mjs";

/** The page's files as web/dist has them: what a service worker or the HTTP cache would serve
 * while the server is down. */
const STATIC = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/app.js": ["app.js", "text/javascript; charset=utf-8"],
  "/app.css": ["app.css", "text/css; charset=utf-8"],
};

/** Rows the console keeps for a session in IndexedDB, and its stored head seq. */
async function stored(page, session) {
  return page.evaluate(async (session) => {
    const db = await new Promise((ok, fail) => {
      const request = indexedDB.open("chatsync-console");
      request.onsuccess = () => ok(request.result);
      request.onerror = () => fail(request.error);
    });
    const all = (store) =>
      new Promise((ok, fail) => {
        const request = db.transaction(store).objectStore(store).getAll();
        request.onsuccess = () => ok(request.result.filter((row) => row.session === session));
        request.onerror = () => fail(request.error);
      });
    const [sessions, chats, messages] = [await all("sessions"), await all("chats"), await all("messages")];
    db.close();
    return { head: sessions[0]?.head ?? null, chats: chats.length, messages: messages.length };
  }, session);
}

/** Waits until the stored head seq is the server's (every event so far is in IndexedDB). */
async function waitStored(page, setup, session) {
  const { headSeq } = await rpc(setup, "GetSyncStatus", { session_id: session });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const now = await stored(page, session);
    if (now.head === String(headSeq)) return now;
    if (Date.now() > deadline) throw new Error(`stored head ${now.head}, server head ${headSeq}`);
    await page.waitForTimeout(50);
  }
}

const EDITED = "first in alpha, edited";
const preview = (chatId, text) => `#chats [data-chat="${chatId}"] .chat-preview:text-is("You: ${text}")`;

describe("the console's chats in IndexedDB", () => {
  let setup;
  let server;
  let browser;
  let page;
  const calls = [];
  const pageErrors = [];
  const snapshotsSince = (n) => calls.slice(n).filter((p) => p.endsWith("/GetSnapshot")).length;

  before(async () => {
    setup = await makeConfig();
    server = await startServer(setup);
    browser = await launchBrowser();
    page = await browser.context.newPage();
    page.on("pageerror", (error) => pageErrors.push(String(error)));
    page.on("request", (request) => calls.push(new URL(request.url()).pathname));
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    setup?.cleanup();
    assert.deepEqual(pageErrors, [], "no uncaught errors on the page");
  });

  it("reloads from IndexedDB with the server down, then resumes from the stored seq without a snapshot", async () => {
    await cli(setup, ["send", "notes", "alpha", "first in alpha"]);
    await cli(setup, ["send", "notes", "beta", "first in beta"]);
    await page.goto(`${setup.url}/#session=notes&chat=alpha`);
    await page.waitForSelector(preview("beta", "first in beta"));
    await page.waitForSelector('#messages .msg .text:text-is("first in alpha")');
    await page.waitForSelector('#conn[data-state="live"]');
    assert.equal(snapshotsSince(0), 1, "the first load takes one snapshot");
    await cli(setup, ["send", "notes", "beta", "second in beta"]);
    await page.waitForSelector(preview("beta", "second in beta"));
    // An edit, then a status change, applied live to the open chat: both are stored with it.
    const id = await page.getAttribute('#messages .msg:has(.text:text-is("first in alpha"))', "data-id");
    await rpc(setup, "EditMessage", { session_id: "notes", message_id: id, text: EDITED, request_id: "localfirst-edit" });
    await rpc(setup, "UpdateMessageStatus", { session_id: "notes", message_id: id, status: "MESSAGE_STATUS_READ" });
    const alphaMessage = `#messages .msg[data-id="${id}"][data-status="read"][data-edited="true"] .text:text-is("${EDITED}")`;
    await page.waitForSelector(alphaMessage);
    const kept = await waitStored(page, setup, "notes");
    assert.equal(kept.chats, 2);
    assert.ok(kept.messages >= 1, "the open chat's messages are kept");

    // Away from the page, the session moves on; then the server goes down.
    await page.goto("about:blank");
    await cli(setup, ["send", "notes", "beta", "while the page was away"]);
    await server.stop();
    await page.route(`${setup.url}/**`, (route) => {
      const entry = STATIC[new URL(route.request().url()).pathname];
      if (!entry) return route.continue();
      return route.fulfill({ body: readFileSync(join(root, "web", "dist", entry[0])), contentType: entry[1] });
    });
    const atReload = calls.length;
    await page.goto(`${setup.url}/#session=notes&chat=alpha`);
    // Every call to the server fails; the chats and the open chat's messages come from IndexedDB.
    await page.waitForSelector(preview("beta", "second in beta"));
    await page.waitForSelector(preview("alpha", EDITED));
    await page.waitForSelector(alphaMessage);
    await page.waitForSelector('#banner:text("Showing the chats stored in this browser")');
    assert.notEqual(await page.getAttribute("#conn", "data-state"), "live");
    await screenshot(page, "console-offline-from-indexeddb");

    // The server comes back (same database, same port): the stream resumes after the stored seq.
    server = await startServer(setup);
    await page.waitForSelector('#conn[data-state="live"]', { timeout: 30_000 });
    await page.waitForSelector(preview("beta", "while the page was away"));
    await cli(setup, ["send", "notes", "alpha", "after the outage"]);
    await page.waitForSelector('#messages .msg .text:text-is("after the outage")');
    assert.deepEqual(await shownTexts(page), [EDITED, "after the outage"], "no gap, no duplicate");
    const since = calls.slice(atReload);
    assert.equal(snapshotsSince(atReload), 0, `no GetSnapshot after the reload: ${since}`);
    assert.ok(since.some((p) => p.endsWith("/SubscribeMessages")), "the page subscribed");
    assert.ok(!since.some((p) => p.endsWith("/ListMessages")), "the open chat's messages came from IndexedDB");
    await page.unroute(`${setup.url}/**`);
    await waitStored(page, setup, "notes");
  });

  it("forgets the local data on request; the next load takes a snapshot and keeps it again", async () => {
    await page.click("#forget");
    await page.waitForSelector('#banner[data-kind="info"]:text("This browser keeps no chats of notes now")');
    assert.deepEqual(await stored(page, "notes"), { head: null, chats: 0, messages: 0 });
    assert.ok(await page.isHidden("#forget"));
    // The page stays live; what it applies now is not stored.
    await cli(setup, ["send", "notes", "alpha", "after forgetting"]);
    await page.waitForSelector('#messages .msg .text:text-is("after forgetting")');

    const atReload = calls.length;
    await page.reload();
    await page.waitForSelector(preview("alpha", "after forgetting"));
    await page.waitForSelector('#conn[data-state="live"]');
    assert.equal(snapshotsSince(atReload), 1, "nothing stored: a new snapshot");
    const kept = await waitStored(page, setup, "notes");
    assert.equal(kept.chats, 2, "stored again");
  });

  it("drops the local data when the server's head is behind it, and says so", async () => {
    await waitStored(page, setup, "notes");
    // The same address, a new empty database: the server's head is 0.
    await server.stop();
    const config = join(setup.dir, "fresh.toml");
    writeFileSync(config, readFileSync(setup.config, "utf8").replace("chatsync.db", "fresh.db"));
    server = await startServer({ ...setup, config });
    const atReload = calls.length;
    await page.reload();
    // GetSyncStatus's head is behind the stored seq, and SubscribeMessages refuses a cursor ahead
    // of the head (INVALID_ARGUMENT): either way the page drops what it stored, and says so.
    await page.waitForSelector('#banner[data-kind="info"]:text("they were dropped and loaded again")');
    await page.waitForSelector('#chats .placeholder:text("No chats yet")');
    assert.equal(snapshotsSince(atReload), 1, "a new snapshot");
    await page.waitForSelector('#conn[data-state="live"]');
    await cli(setup, ["send", "notes", "gamma", "on the new server"]);
    await page.waitForSelector(preview("gamma", "on the new server"));
    const kept = await waitStored(page, setup, "notes");
    assert.equal(kept.chats, 1, "only the new server's chat is stored");
  });
});
