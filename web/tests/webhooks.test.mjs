// The console's webhooks list, end to end: two `[[webhooks]]` endpoints on loopback receivers,
// one answering 204 and one 410; after a message to `notes`, the page shows the first up to
// date and the second failing with its 410, as `chatsync webhooks --json` does.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { cli, launchBrowser, makeConfig, screenshot, startServer } from "./harness.mjs";

const SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/** An HTTP receiver on a free loopback port answering every POST with `status`. */
async function receiver(status) {
  const requests = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      requests.push(req.headers["webhook-id"]);
      res.writeHead(status).end();
    });
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return { url: `http://127.0.0.1:${server.address().port}/hook`, requests, close: () => server.close() };
}

function endpoint(dir, id, url) {
  const secretFile = join(dir, `${id}.secret`);
  writeFileSync(secretFile, SECRET);
  return [
    "[[webhooks]]",
    `id = "${id}"`,
    `url = "${url}"`,
    `secret_file = ${JSON.stringify(secretFile)}`,
    'sessions = ["notes"]',
    "allow_private_network = true",
  ].join("\n");
}

describe("console webhooks", () => {
  let setup;
  let server;
  let browser;
  let healthy;
  let gone;
  const pageErrors = [];

  before(async () => {
    healthy = await receiver(204);
    gone = await receiver(410);
    setup = await makeConfig({
      extraToml: (dir) => [endpoint(dir, "crm", healthy.url), endpoint(dir, "gone", gone.url)].join("\n"),
    });
    server = await startServer(setup);
    browser = await launchBrowser();
    await cli(setup, ["send", "notes", "general", "to every endpoint"]);
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    healthy?.close();
    gone?.close();
    setup?.cleanup();
    assert.deepEqual(pageErrors, [], "no uncaught errors on the page");
  });

  it("shows each endpoint's state as the CLI does", async () => {
    const page = await browser.context.newPage();
    page.on("pageerror", (error) => pageErrors.push(String(error)));
    await page.goto(`${setup.url}/`);
    await page.waitForSelector("#webhooks-section:not([hidden])");
    const crm = await page.waitForSelector('#webhooks [data-webhook="crm"][data-session="notes"][data-state="up to date"]');
    const failing = await page.waitForSelector('#webhooks [data-webhook="gone"][data-session="notes"][data-state="failing"]');
    assert.match(await failing.$eval(".webhook-facts", (e) => e.textContent), /→ 410/);
    assert.ok(await failing.$(".webhook-error"), "a failing endpoint shows its error");
    const crmFacts = await crm.$eval(".webhook-facts", (e) => e.textContent);
    await screenshot(page, "console-webhooks");

    const statuses = (await cli(setup, ["webhooks", "--json"]))
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line));
    const byId = Object.fromEntries(statuses.map((s) => [s.webhookId, s]));
    assert.equal(byId.crm.state, "WEBHOOK_STATE_UP_TO_DATE");
    assert.equal(byId.gone.state, "WEBHOOK_STATE_FAILING");
    assert.equal(byId.gone.lastStatus, 410);
    assert.ok(crmFacts.startsWith(`cursor ${byId.crm.cursor} of ${byId.crm.headSeq} (lag 0)`), crmFacts);
    assert.ok(healthy.requests.length >= 1, "the healthy receiver got the message");
  });
});
