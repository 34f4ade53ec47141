// The shortener demo in headless Chromium (playwright-core), for tests/test_demo_shortener.py.
//
//   node tests/browser/shortener.mjs BASE_URL TARGET_URL ARTIFACT_DIR TIMEOUT_SECONDS
//
// Page A opens BASE_URL/, shortens TARGET_URL with the form (screenshot
// ARTIFACT_DIR/shortener-form.png), follows the link to the map page
// /m/<code> and waits until it is watching over WebSocket; page B opens the
// same map page with ?transport=polling. Then it prints
//   {"type":"ready","code","shortUrl","a":STATE,"b":STATE}
// and answers commands read from stdin, one JSON object a line:
//   {"cmd":"wait","markers":N,"timeout":S} -> waits until both pages drew N markers, takes
//        the screenshots ARTIFACT_DIR/shortener-map.png (A) and shortener-map-polling.png (B),
//        -> {"type":"markers","a":STATE,"b":STATE}
//   {"cmd":"exit"} -> closes the browser, exits 0 (so does the end of stdin)
// STATE is window.shortener of the page plus the page's errors. Any failure prints
// {"type":"error","reason",...} and exits 1. Run with cwd = the repo.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const [base, target, artifacts, timeoutArg] = process.argv.slice(2);
const timeoutMs = Number(timeoutArg) * 1000;
const executablePath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

const say = (message) => process.stdout.write(JSON.stringify(message) + "\n");
let browser = null;
async function fail(reason, detail = {}) {
  say({ type: "error", reason, ...detail });
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}

if (!base || !target || !artifacts || !(timeoutMs > 0)) {
  await fail("usage: shortener.mjs BASE_URL TARGET_URL ARTIFACT_DIR TIMEOUT_SECONDS",
    { argv: process.argv.slice(2) });
}
mkdirSync(artifacts, { recursive: true });

const errors = new Map(); // page -> [messages]
function watchErrors(page, name) {
  const list = [];
  errors.set(page, list);
  page.on("pageerror", (err) => list.push(`${name} page error: ${err.message}`));
  page.on("console", (msg) => {
    if (msg.type() === "error") list.push(`${name} console error: ${msg.text()}`);
  });
  page.on("response", (res) => {
    if (res.status() >= 400) list.push(`${name} HTTP ${res.status()}: ${res.url()}`);
  });
  page.on("requestfailed", (req) => {
    // socket.io's long-polls are aborted when the page closes or upgrades: not errors
    if (!req.url().includes("/socket.io/")) list.push(`${name} request failed: ${req.url()}`);
  });
}

async function state(page) {
  const s = await page.evaluate(() => {
    const st = window.shortener || {};
    return {
      code: st.code, markers: st.markers, live: st.live, visits: st.visits, liveEvents: st.liveEvents,
      dropped: st.dropped, transport: st.transport, connected: st.connected, watching: st.watching,
      pid: st.pid, mapReady: st.mapReady, recent: st.recent,
      countryPaths: document.querySelectorAll(".leaflet-countries-pane path").length,
      markerPaths: document.querySelectorAll("path.visit-marker").length,
      listed: [...document.querySelectorAll("#visits li")].map((li) => li.textContent),
      visitCount: document.getElementById("visit-count")?.textContent,
      error: document.getElementById("error")?.textContent,
    };
  });
  return { ...s, errors: errors.get(page) };
}

async function openMap(page, url, transport, navigate = true) {
  if (navigate) await page.goto(url, { timeout: timeoutMs });
  else await page.waitForURL(url, { timeout: timeoutMs });
  await page.waitForFunction(
    (t) => window.shortener && window.shortener.watching && window.shortener.mapReady &&
      window.shortener.transport === t,
    transport, { timeout: timeoutMs },
  ).catch(async (err) => fail(`map page ${url} not live over ${transport}`,
    { message: err.message, state: await state(page).catch(() => null) }));
}

const timer = setTimeout(() => fail("startup timeout", { seconds: timeoutMs / 1000 }), 3 * timeoutMs);
let pageA, pageB, code, shortUrl;
try {
  browser = await chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    timeout: timeoutMs,
  });
  const contextA = await browser.newContext({ viewport: { width: 1100, height: 1000 } });
  pageA = await contextA.newPage();
  watchErrors(pageA, "A");
  await pageA.goto(base + "/", { timeout: timeoutMs });
  await pageA.fill("#url", target);
  await pageA.click("#shorten");
  await pageA.waitForSelector("#result:not([hidden])", { timeout: timeoutMs });
  code = await pageA.evaluate(() => document.getElementById("result").dataset.code);
  shortUrl = await pageA.textContent("#short-url");
  await pageA.screenshot({ path: join(artifacts, "shortener-form.png"), fullPage: true });
  await pageA.click("#monitor-link");
  await openMap(pageA, `${base}/m/${code}`, "websocket", false); // default transports: polling, then the upgrade

  const contextB = await browser.newContext({ viewport: { width: 1100, height: 1000 } });
  pageB = await contextB.newPage();
  watchErrors(pageB, "B");
  await openMap(pageB, `${base}/m/${code}?transport=polling`, "polling");
} catch (err) {
  await fail("startup failed", { message: String(err?.message ?? err) });
}
clearTimeout(timer);
say({ type: "ready", code, shortUrl, a: await state(pageA), b: await state(pageB) });

async function waitMarkers(count, seconds) {
  const ms = Math.min(Number(seconds) * 1000, 120000);
  for (const [name, page] of [["A", pageA], ["B", pageB]]) {
    try {
      await page.waitForFunction((n) => window.shortener.markers >= n, count, { timeout: ms });
    } catch (err) {
      return say({ type: "timeout", page: name, message: err.message, a: await state(pageA), b: await state(pageB) });
    }
  }
  await pageA.waitForTimeout(1000); // the markers' pop animation (0.6 s) is over
  await pageA.screenshot({ path: join(artifacts, "shortener-map.png"), fullPage: true });
  await pageB.screenshot({ path: join(artifacts, "shortener-map-polling.png"), fullPage: true });
  say({ type: "markers", a: await state(pageA), b: await state(pageB) });
}

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  let command;
  try {
    command = JSON.parse(line);
  } catch {
    await fail("bad command", { line });
  }
  if (command.cmd === "wait") await waitMarkers(command.markers, command.timeout);
  else if (command.cmd === "exit") break;
  else await fail("unknown command", { line });
}
await browser.close();
process.exit(0);
