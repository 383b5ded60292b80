// The console's search box, end to end: messages sent through the CLI to a `local` session are
// found by the page (typed query, highlighted hit, click opens the chat) and by `chatsync search`.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { cli, launchBrowser, makeConfig, screenshot, startServer } from "./harness.mjs";

describe("console search", () => {
  let setup;
  let server;
  let browser;
  const pageErrors = [];

  before(async () => {
    setup = await makeConfig();
    server = await startServer(setup);
    browser = await launchBrowser();
    await cli(setup, ["send", "notes", "paris", "Rendez-vous au Café de Flore à midi"]);
    await cli(setup, ["send", "notes", "general", "nothing about coffee here"]);
    await cli(setup, ["send", "notes", "tokyo", "明日は東京タワーに行きます"]);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    setup?.cleanup();
    assert.deepEqual(pageErrors, [], "no uncaught errors on the page");
  });

  it("finds a message from a typed query, highlights the match and opens its chat", async () => {
    const page = await browser.context.newPage();
    page.on("pageerror", (error) => pageErrors.push(String(error)));
    await page.goto(`${setup.url}/`);
    await page.click('#sessions [data-session="notes"] .session-name');
    await page.waitForSelector("#search:not([hidden])");
    await page.fill("#search-query", "cafe");
    await page.press("#search-query", "Enter");
    const hit = await page.waitForSelector('#search-results .search-hit[data-chat="paris"]');
    assert.equal(await hit.$eval("mark", (m) => m.textContent), "Café");
    assert.equal(await page.$$eval("#search-results .search-hit", (hits) => hits.length), 1);
    assert.equal(await page.isHidden("#chats"), true, "results take the chats' place");
    await screenshot(page, "console-search");

    await hit.click();
    await page.waitForSelector('.conv-sub:text("notes · paris")');
    await page.waitForSelector('#messages .msg:has(.text:text-is("Rendez-vous au Café de Flore à midi"))');

    // A CJK substring; then clearing the box brings the chats back.
    await page.fill("#search-query", "東京");
    await page.press("#search-query", "Enter");
    await page.waitForSelector('#search-results .search-hit[data-chat="tokyo"] mark:text-is("東京")');
    await page.press("#search-query", "Escape");
    await page.waitForSelector("#search-results", { state: "hidden" });
    assert.equal(await page.isVisible("#chats"), true);
  });

  it("is what `chatsync search` prints too", async () => {
    const out = await cli(setup, ["search", "notes", "FLORE", "--json"]);
    const hits = out.trim().split("\n").map((line) => JSON.parse(line));
    assert.equal(hits.length, 1);
    assert.equal(hits[0].message.chatId, "paris");
    assert.match(hits[0].snippet, /\u0002Flore\u0003/);
    const plain = await cli(setup, ["search", "notes", "cafe", "--chat", "general"]);
    assert.equal(plain.trim(), "", "the chat filter leaves nothing");
  });
});
