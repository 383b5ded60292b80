// A message's whole life in the console (issue 17): replies quoted, reactions with their count,
// "edited" with the earlier text, deleted messages, the message-info view with per-recipient
// receipts, images inline and other files as downloads (GetMedia), and message_updated events
// applied in place. Messages are made on a `local` session through the CLI and native gRPC.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { crc32, deflateSync } from "node:zlib";
import { cli, launchBrowser, makeConfig, rpc, screenshot, startServer } from "./harness.mjs";

/** A PNG of `width` × `height` RGB pixels, made here (zlib's deflate and CRC-32). */
function makePng(width, height) {
  const chunk = (type, data) => {
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const out = Buffer.alloc(body.length + 8);
    out.writeUInt32BE(data.length, 0);
    body.copy(out, 4);
    out.writeUInt32BE(crc32(body), body.length + 4);
    return out;
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const rows = [];
  for (let y = 0; y < height; y++) {
    rows.push(0);
    for (let x = 0; x < width; x++) rows.push((x * 80) & 255, (y * 120) & 255, 200);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(Buffer.from(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}
const PNG = makePng(3, 2);
const NOTES = "meeting notes\nline two\n";
const CHAT = "life";
const T = { timeout: 5000 };

async function sendJson(setup, args) {
  const out = await cli(setup, ["send", "notes", CHAT, ...args, "--json"]);
  return JSON.parse(out).message;
}

const msg = (id) => `#messages .msg[data-id="${id}"]`;

describe("the web console shows a message's life", () => {
  let setup;
  let server;
  let browser;
  let page;
  const pageErrors = [];
  const ids = {};

  before(async () => {
    setup = await makeConfig();
    server = await startServer(setup);
    browser = await launchBrowser();

    const png = join(setup.dir, "dot.png");
    writeFileSync(png, PNG);
    const txt = join(setup.dir, "notes.txt");
    writeFileSync(txt, NOTES);

    ids.original = (await sendJson(setup, ["the original message"])).id;
    const reply = await sendJson(setup, ["a reply to it", "--reply-to", ids.original]);
    ids.reply = reply.id;
    assert.equal(reply.replyTo.messageId, ids.original, "SendMessage stored the reply");
    const reacted = JSON.parse(await cli(setup, ["react", "notes", ids.original, "👍", "--json"]));
    assert.equal(reacted.changed, true);
    ids.edited = (await sendJson(setup, ["first wording"])).id;
    const edited = JSON.parse(await cli(setup, ["edit", "notes", ids.edited, "second wording", "--json"]));
    assert.equal(edited.message.edited, true);
    ids.deleted = (await sendJson(setup, ["a message to take back"])).id;
    const deleted = JSON.parse(await cli(setup, ["delete", "notes", ids.deleted, "--json"]));
    assert.equal(deleted.message.kind, "MESSAGE_KIND_DELETED");
    // Two recipients' receipts: alice has it delivered, bob has read it.
    await rpc(setup, "UpdateMessageStatus", {
      session_id: "notes",
      message_id: ids.original,
      status: "MESSAGE_STATUS_DELIVERED",
      recipient: "alice",
    });
    await rpc(setup, "UpdateMessageStatus", {
      session_id: "notes",
      message_id: ids.original,
      status: "MESSAGE_STATUS_READ",
      recipient: "bob",
    });
    const image = await sendJson(setup, ["a picture", "--attach", png]);
    ids.image = image.id;
    assert.equal(image.attachments[0].mimeType, "image/png");
    const file = await sendJson(setup, ["", "--attach", txt]);
    ids.file = file.id;
    assert.equal(file.attachments[0].stored, true);

    page = await browser.context.newPage();
    page.on("pageerror", (error) => pageErrors.push(String(error)));
    await page.goto(`${setup.url}/#session=notes&chat=${CHAT}`);
    await page.waitForSelector(msg(ids.file), { timeout: 15_000 });
    await page.waitForSelector('#conn[data-state="live"]', { timeout: 15_000 });
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    setup?.cleanup();
    assert.deepEqual(pageErrors, [], "no uncaught errors on the page");
  });

  it("quotes the message a reply answers", async () => {
    const quote = await page.waitForSelector(`${msg(ids.reply)} .quote`, T);
    assert.equal(await quote.getAttribute("data-reply-to"), ids.original);
    assert.equal(await (await quote.$(".quote-sender")).textContent(), "You");
    assert.equal(await (await quote.$(".quote-text")).textContent(), "the original message");
    assert.equal(await page.textContent(`${msg(ids.reply)} > .text`), "a reply to it");
    // The original is not a reply.
    assert.equal(await page.$(`${msg(ids.original)} .quote`), null);
  });

  it("shows reactions with their count and who reacted", async () => {
    const reaction = await page.waitForSelector(`${msg(ids.original)} .reaction[data-emoji="👍"]`, T);
    assert.equal(await (await reaction.$(".reaction-count")).textContent(), "1");
    assert.match(await reaction.getAttribute("title"), /👍 You/);
  });

  it("marks an edited message, with the earlier text viewable", async () => {
    const el = msg(ids.edited);
    assert.equal(await page.textContent(`${el} > .text`), "second wording");
    const marker = await page.waitForSelector(`${el} .edited`, T);
    assert.equal(await marker.textContent(), "edited");
    assert.match(await marker.getAttribute("title"), /Earlier: “first wording”/);
    assert.equal(await page.isHidden(`${el} .earlier`), true);
    await marker.click();
    await page.waitForSelector(`${el} .earlier:not([hidden]) .earlier-text:text-is("first wording")`, T);
  });

  it("shows a deleted message as deleted", async () => {
    const el = await page.waitForSelector(`${msg(ids.deleted)}.msg-deleted`, T);
    assert.equal(await (await el.$(".text")).textContent(), "This message was deleted");
    assert.equal(await page.$(`${msg(ids.deleted)} .edited, ${msg(ids.deleted)} .reaction, ${msg(ids.deleted)} .act-edit`), null);
    const shown = await page.textContent("#messages");
    assert.equal(shown.includes("a message to take back"), false, "the text is gone");
  });

  it("lists each recipient's receipts in the message info", async () => {
    await page.click(`${msg(ids.original)} .info-btn`);
    const dialog = await page.waitForSelector(`#msg-info[open][data-id="${ids.original}"]`, T);
    const rows = await dialog.$$eval(".receipt", (trs) =>
      trs.map((tr) => ({
        recipient: tr.dataset.recipient,
        delivered: tr.querySelector(".delivered").dataset.at,
        read: tr.querySelector(".read").dataset.at,
        readText: tr.querySelector(".read").textContent,
      })),
    );
    const stored = (await rpc(setup, "ListMessages", { session_id: "notes", chat_id: CHAT })).messages.find(
      (m) => m.id === ids.original,
    );
    assert.deepEqual(rows.map((r) => r.recipient).sort(), ["alice", "bob"]);
    const alice = rows.find((r) => r.recipient === "alice");
    const bob = rows.find((r) => r.recipient === "bob");
    const storedAlice = stored.receipts.find((r) => r.recipient === "alice");
    const storedBob = stored.receipts.find((r) => r.recipient === "bob");
    assert.equal(new Date(alice.delivered).getTime(), new Date(storedAlice.deliveredAt).getTime(), "alice: delivered at");
    assert.equal(alice.read, "", "alice has not read it");
    assert.equal(alice.readText, "—");
    assert.equal(new Date(bob.read).getTime(), new Date(storedBob.readAt).getTime(), "bob: read at");
    assert.match(await dialog.textContent(), /👍 You/, "the reactions are listed too");
    await screenshot(page, "console-message-info");
    await page.click("#msg-info .info-close");
    await page.waitForSelector("#msg-info:not([open])", { ...T, state: "attached" });
  });

  it("shows an image inline and offers other files as downloads", async () => {
    const img = `${msg(ids.image)} img.att-img`;
    await page.waitForSelector(img, T);
    await page.waitForFunction(
      (selector) => {
        const i = document.querySelector(selector);
        return i && i.complete && i.naturalWidth > 0;
      },
      img,
      T,
    );
    assert.deepEqual(
      await page.$eval(img, (i) => [i.naturalWidth, i.naturalHeight, i.src.startsWith("blob:")]),
      [3, 2, true],
    );
    assert.equal(await page.textContent(`${msg(ids.image)} > .text`), "a picture");

    const link = `${msg(ids.file)} a.att-file`;
    await page.waitForSelector(link, T);
    assert.equal(await page.textContent(`${link} .att-name`), "notes.txt");
    assert.equal(await page.textContent(`${link} .att-size`), `${Buffer.byteLength(NOTES)} B`);
    const [download] = await Promise.all([page.waitForEvent("download", T), page.click(link)]);
    assert.equal(download.suggestedFilename(), "notes.txt");
    assert.equal(readFileSync(await download.path(), "utf8"), NOTES, "the bytes GetMedia served");
    await screenshot(page, "console-lifecycle");
  });

  it("applies a live message_updated in place", async () => {
    // Tag the elements that must survive: the update replaces only its own message.
    await page.$eval(msg(ids.image), (el) => {
      el.dataset.survivor = "yes";
    });
    const order = await page.$$eval("#messages .msg", (els) => els.map((e) => e.dataset.id));
    await cli(setup, ["react", "notes", ids.edited, "🎉"]);
    const reaction = await page.waitForSelector(`${msg(ids.edited)} .reaction[data-emoji="🎉"][data-count="1"]`, T);
    assert.ok(reaction);
    assert.equal(await page.getAttribute(msg(ids.image), "data-survivor"), "yes", "no re-render of the rest");
    assert.deepEqual(await page.$$eval("#messages .msg", (els) => els.map((e) => e.dataset.id)), order, "same place");
    assert.equal(await page.textContent(`${msg(ids.edited)} > .text`), "second wording");

    // An edit of the quoted message reaches the quote too.
    await cli(setup, ["edit", "notes", ids.original, "the original, reworded"]);
    await page.waitForSelector(`${msg(ids.reply)} .quote-text:text-is("the original, reworded")`, T);
    await page.waitForSelector(`${msg(ids.original)} .edited`, T);
    // A receipt while the info view is open updates it.
    await page.click(`${msg(ids.original)} .info-btn`);
    await page.waitForSelector(`#msg-info[open] .receipt[data-recipient="alice"] .read[data-at=""]`, T);
    await rpc(setup, "UpdateMessageStatus", {
      session_id: "notes",
      message_id: ids.original,
      status: "MESSAGE_STATUS_READ",
      recipient: "alice",
    });
    await page.waitForSelector(`#msg-info[open] .receipt[data-recipient="alice"] .read:not([data-at=""])`, T);
    await page.keyboard.press("Escape");
    await page.waitForSelector("#msg-info:not([open])", { ...T, state: "attached" });
  });

  it("reacts, edits and deletes from the page", async () => {
    const target = msg(ids.reply);
    await page.hover(target);
    await page.click(`${target} .act-react[data-emoji="😂"]`);
    await page.waitForSelector(`${target} .reaction[data-emoji="😂"].reaction-mine`, T);
    // The same button again takes the reaction back.
    await page.hover(target);
    await page.click(`${target} .act-react[data-emoji="😂"]`);
    await page.waitForSelector(`${target}:not(:has(.reaction))`, T);

    page.once("dialog", (dialog) => dialog.accept("a reply, edited on the page"));
    await page.hover(target);
    await page.click(`${target} .act-edit`);
    await page.waitForSelector(`${target} > .text:text-is("a reply, edited on the page")`, T);
    await page.waitForSelector(`${target} .edited`, T);

    page.once("dialog", (dialog) => dialog.accept());
    await page.hover(target);
    await page.click(`${target} .act-delete`);
    await page.waitForSelector(`${target}.msg-deleted > .text:text-is("This message was deleted")`, T);
    const stored = (await rpc(setup, "ListMessages", { session_id: "notes", chat_id: CHAT })).messages.find(
      (m) => m.id === ids.reply,
    );
    assert.equal(stored.kind, "MESSAGE_KIND_DELETED");
  });
});
