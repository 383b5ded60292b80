// Shared pieces of the browser tests: a real `chatsync serve` on a free port with a temp
// SQLite file, Debian's chromium through playwright-core, the CLI, and `buf curl`.
import { spawn, execFile, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, openSync, writeSync, closeSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, "..", "..");
export const bin = resolve(root, process.env.CHATSYNC_BIN ?? "target/debug/chatsync");
export const screenshots = join(root, ".ci", "out", "screenshots");
const buf = process.env.CHATSYNC_BUF ?? join(root, ".tools", "node_modules", ".bin", "buf");
const run = promisify(execFile);

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A free TCP port on loopback. */
export async function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

/** A temp folder with a config for the `demo` (sample WhatsApp exports) and `notes` sessions.
 * `extraToml(dir)` gives more tables (`[[webhooks]]` …), appended last. */
export async function makeConfig({ tokens = [], bigMessages = 0, extraToml = null } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "chatsync-web-"));
  const port = await freePort();
  const big = bigMessages > 0 ? writeBigExports(join(dir, "big"), bigMessages) : null;
  const toml = [
    `listen = "127.0.0.1:${port}"`,
    `database_url = "sqlite://${join(dir, "chatsync.db")}"`,
    `heartbeat_secs = 5`,
    ...tokens.flatMap((t) => ["[[tokens]]", `token = "${t.token}"`, `sessions = ${JSON.stringify(t.sessions)}`]),
    "[[sessions]]",
    'id = "demo"',
    'source = "whatsapp-export"',
    `path = ${JSON.stringify(join(root, "samples", "whatsapp"))}`,
    "[[sessions]]",
    'id = "notes"',
    'source = "local"',
    ...(big ? ["[[sessions]]", 'id = "big"', 'source = "whatsapp-export"', `path = ${JSON.stringify(big.folder)}`] : []),
    ...(extraToml ? [extraToml(dir)] : []),
    "",
  ].join("\n");
  const config = join(dir, "chatsync.toml");
  writeFileSync(config, toml);
  return {
    dir,
    port,
    config,
    url: `http://127.0.0.1:${port}`,
    releaseBig: () => big?.release(),
    cleanup: () => {
      big?.release();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Android-layout lines: `count` messages, one a minute, alternating between two senders. */
function androidLines(name, count) {
  const lines = [];
  const start = Date.UTC(2022, 0, 1, 8, 0);
  const p = (n) => String(n).padStart(2, "0");
  for (let i = 0; i < count; i++) {
    const d = new Date(start + i * 60_000);
    const stamp = `${p(d.getUTCDate())}/${p(d.getUTCMonth() + 1)}/${d.getUTCFullYear()}, ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}`;
    lines.push(`${stamp} - ${i % 2 ? "Ana" : "Ben"}: ${name} message ${i + 1}`);
  }
  return lines.join("\n") + "\n";
}

/** Messages in the held chat: small enough to fit a pipe buffer, so releasing never blocks. */
export const HELD_MESSAGES = 300;

/** A session whose sync can be held in the middle: two big Android-layout exports with
 * `perChat` messages each, a third ("Held Three") that is a named pipe, so the run blocks
 * reading it until `release()` writes its `HELD_MESSAGES` lines, and a broken zip whose
 * CHAT_FAILED frame comes last. */
function writeBigExports(folder, perChat) {
  mkdirSync(folder, { recursive: true });
  for (const name of ["Big One", "Big Two"]) {
    writeFileSync(join(folder, `WhatsApp Chat with ${name}.txt`), androidLines(name, perChat));
  }
  const held = join(folder, "WhatsApp Chat with Held Three.txt");
  execFileSync("mkfifo", [held]);
  writeFileSync(join(folder, "WhatsApp Chat with Zz Broken.zip"), "PK\x03\x04 this is not a zip");
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    // O_RDWR never blocks on a FIFO, even before the server opens it for reading.
    const fd = openSync(held, "r+");
    writeSync(fd, androidLines("Held Three", HELD_MESSAGES));
    closeSync(fd);
  };
  return { folder, release };
}

/** Starts `chatsync serve` and waits until the page answers. */
export async function startServer(setup) {
  const log = openSync(join(setup.dir, "server.log"), "a");
  const child = spawn(bin, ["serve", "--config", setup.config], {
    cwd: setup.dir,
    stdio: ["ignore", log, log],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" },
  });
  const exited = new Promise((ok) => child.once("exit", (code, signal) => ok({ code, signal })));
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      const response = await fetch(`${setup.url}/`);
      if (response.ok) break;
    } catch {
      // not up yet
    }
    if (child.exitCode !== null) throw new Error(`chatsync serve exited early; see ${setup.dir}/server.log`);
    if (Date.now() > deadline) throw new Error("chatsync serve did not come up in 20 s");
    await sleep(50);
  }
  return {
    child,
    /** SIGTERM, as an operator would, and wait for the exit. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
}

/** Runs the CLI against the server; resolves with stdout. */
export async function cli(setup, args, { token } = {}) {
  const extra = token ? ["--token", token] : [];
  const { stdout } = await run(bin, [...args, "--server", setup.url, ...extra], { timeout: 20_000 });
  return stdout;
}

/** A unary RPC through native gRPC (`buf curl`, schema from reflection). */
export async function rpc(setup, method, body, { token } = {}) {
  // Reflection is behind the token too (reflection_requires_token): send it there as well.
  const headers = token ? ["-H", `authorization: Bearer ${token}`, "--reflect-header", "*"] : [];
  const { stdout } = await run(
    buf,
    ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...headers, "-d", JSON.stringify(body), `${setup.url}/chatsync.v1.ChatSyncService/${method}`],
    { timeout: 20_000 },
  );
  return JSON.parse(stdout);
}

/** A `chatsync subscribe SESSION --json` process, collecting its events. */
export function subscriber(setup, session) {
  const child = spawn(bin, ["subscribe", session, "--json", "--server", setup.url], { stdio: ["ignore", "pipe", "ignore"] });
  const events = [];
  let rest = "";
  const waiters = [];
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk) => {
    rest += chunk;
    const lines = rest.split("\n");
    rest = lines.pop();
    for (const line of lines) {
      if (!line.trim()) continue;
      events.push(JSON.parse(line));
      for (const w of [...waiters]) w();
    }
  });
  return {
    events,
    /** Waits until some event satisfies `check`. */
    waitFor(check, timeoutMs = 10_000) {
      return new Promise((ok, fail) => {
        const test = () => {
          const found = events.find(check);
          if (found) {
            waiters.splice(waiters.indexOf(test), 1);
            clearTimeout(timer);
            ok(found);
          }
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(test), 1);
          fail(new Error(`subscriber saw no matching event in ${timeoutMs} ms: ${JSON.stringify(events)}`));
        }, timeoutMs);
        waiters.push(test);
        test();
      });
    },
    stop() {
      child.kill("SIGTERM");
    },
  };
}

/** Debian's chromium, headless, with a fresh profile. */
export async function launchBrowser() {
  const profile = mkdtempSync(join(tmpdir(), "chatsync-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1360, height: 820 },
    colorScheme: "light",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Saves a screenshot where CI keeps them. */
export async function screenshot(page, name) {
  mkdirSync(screenshots, { recursive: true });
  const path = join(screenshots, `${name}.png`);
  await page.screenshot({ path });
  return path;
}

/** The texts of the messages shown in the open chat. */
export async function shownTexts(page) {
  return page.$$eval("#messages .msg .text", (nodes) => nodes.map((n) => n.textContent));
}
