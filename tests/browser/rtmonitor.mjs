// The rtmonitor demo page in headless Chromium (playwright-core), for tests/test_demo_rtmonitor.py.
//
//   node tests/browser/rtmonitor.mjs URL OUT_DIR TIMEOUT_SECONDS [MIN_POINTS]
//
// Opens two pages of URL: one with socket.io's default transports (polling,
// then the upgrade to WebSocket) and one with ?transport=polling. Waits until
// each has received MIN_POINTS (5) live samples, checks that the charts are
// drawn and redrawn with newer points, compares what both pages hold for the
// seq numbers they share, and saves OUT_DIR/rtmonitor-ws.png and
// OUT_DIR/rtmonitor-polling.png. Prints one JSON line, {"type":"result",...}
// (exit 0) or {"type":"error","reason",...} (exit 1), and never runs longer than
// TIMEOUT_SECONDS. Run with cwd = the repo, so node_modules resolves.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, outDir, timeoutArg, minArg] = process.argv.slice(2);
const timeoutMs = Number(timeoutArg) * 1000;
const minPoints = Number(minArg ?? 5);
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const started = Date.now();
const left = () => Math.max(1000, timeoutMs - (Date.now() - started) - 3000);

const say = (message) => process.stdout.write(JSON.stringify(message) + "\n");

if (!url || !outDir || !(timeoutMs > 0) || !(minPoints > 0)) {
  say({ type: "error", reason: "usage: rtmonitor.mjs URL OUT_DIR TIMEOUT_SECONDS [MIN_POINTS]" });
  process.exit(1);
}

let browser = null;
const pages = {}; // name -> {page, problems}

async function pageState(page) {
  return page.evaluate(() => {
    const s = window.rtmonitor;
    if (!s) return null;
    return {
      received: s.received, count: s.points.length, draws: s.draws, plotted: s.plotted,
      lastPlottedSeq: s.lastPlottedSeq, transport: s.transport, workerPid: s.workerPid,
      connects: s.connects, errors: s.errors.slice(0, 10), fills: s.fills,
      firstSeq: s.points.length ? s.points[0].seq : null,
      lastSeq: s.points.length ? s.points[s.points.length - 1].seq : null,
    };
  });
}

// What is drawn on a chart's base canvas: a hash of its pixels and how many are not background.
async function canvasState(page, chartId) {
  return page.evaluate((id) => {
    const canvas = document.querySelector(`#${id} canvas.flot-base`);
    if (!canvas) return null;
    const { width, height } = canvas;
    const data = canvas.getContext("2d").getImageData(0, 0, width, height).data;
    let hash = 2166136261;
    let inked = 0;
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
      if (a > 0 && (r < 235 || g < 235 || b < 235)) inked++;
      hash = Math.imul(hash ^ (r | (g << 8) | (b << 16) | (a << 24)), 16777619) >>> 0;
    }
    return { width, height, hash, inked };
  }, chartId);
}

async function legend(page, legendId) {
  return page.evaluate((id) => [...document.querySelectorAll(`#${id} text`)].map((t) => t.textContent.trim()),
    legendId);
}

// Canonical JSON (sorted keys), so equal points compare equal whatever their key order.
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

async function diagnostics() {
  const out = {};
  for (const [name, { page, problems }] of Object.entries(pages)) {
    out[name] = { problems: problems.slice(0, 20) };
    try {
      out[name].state = await pageState(page);
    } catch (err) {
      out[name].state = `unreadable: ${err.message}`;
    }
  }
  return out;
}

const deadline = setTimeout(async () => {
  say({ type: "error", reason: `timed out after ${timeoutArg} s`, pages: await diagnostics().catch(() => null) });
  if (browser) await Promise.race([browser.close().catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
  process.exit(1);
}, timeoutMs);

async function main() {
  mkdirSync(outDir, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    timeout: left(),
  });
  // A fresh context: its own empty profile, nothing shared with another run.
  const context = await browser.newContext({ viewport: { width: 1200, height: 1000 } });
  const base = url.replace(/\/$/, "");
  const targets = { ws: `${base}/`, polling: `${base}/?transport=polling` };
  for (const [name, target] of Object.entries(targets)) {
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (err) => problems.push(`pageerror: ${err.message}`));
    page.on("console", (msg) => { if (msg.type() === "error") problems.push(`console: ${msg.text()}`); });
    page.on("requestfailed", (req) => problems.push(`requestfailed: ${req.url()} ${req.failure()?.errorText}`));
    pages[name] = { page, problems, target };
    await page.goto(target, { waitUntil: "load", timeout: left() });
  }

  // Both pages receive live samples.
  for (const { page } of Object.values(pages)) {
    await page.waitForFunction((n) => window.rtmonitor && window.rtmonitor.received >= n, minPoints,
      { timeout: left(), polling: 100 });
  }

  // The charts are drawn, then redrawn with newer points.
  const charts = {};
  for (const [name, { page }] of Object.entries(pages)) {
    const before = { state: await pageState(page), cpu: await canvasState(page, "cpu-chart"),
      mem: await canvasState(page, "mem-chart") };
    await page.waitForFunction((seq) => window.rtmonitor.lastPlottedSeq >= seq + 2,
      before.state.lastPlottedSeq, { timeout: left(), polling: 100 });
    const after = { state: await pageState(page), cpu: await canvasState(page, "cpu-chart"),
      mem: await canvasState(page, "mem-chart") };
    charts[name] = {
      before: { draws: before.state.draws, plotted: before.state.plotted, lastPlottedSeq: before.state.lastPlottedSeq },
      after: { draws: after.state.draws, plotted: after.state.plotted, lastPlottedSeq: after.state.lastPlottedSeq },
      canvas: { cpu: after.cpu, mem: after.mem },
      cpuRedrawn: Boolean(before.cpu && after.cpu && before.cpu.hash !== after.cpu.hash),
      memRedrawn: Boolean(before.mem && after.mem && before.mem.hash !== after.mem.hash),
      legend: { cpu: await legend(page, "cpu-legend"), mem: await legend(page, "mem-legend") },
    };
  }

  // The same points on both pages, for the seq numbers both have.
  const held = {};
  for (const [name, { page }] of Object.entries(pages)) {
    held[name] = await page.evaluate(() => window.rtmonitor.points);
  }
  const bySeq = (points) => new Map(points.map((p) => [p.seq, p]));
  const ws = bySeq(held.ws);
  const polling = bySeq(held.polling);
  const lo = Math.max(held.ws[0].seq, held.polling[0].seq);
  const hi = Math.min(held.ws.at(-1).seq, held.polling.at(-1).seq);
  const missing = { ws: [], polling: [] };
  const mismatched = [];
  for (let seq = lo; seq <= hi; seq++) {
    const a = ws.get(seq);
    const b = polling.get(seq);
    if (!a) missing.ws.push(seq);
    if (!b) missing.polling.push(seq);
    if (a && b && canonical(a) !== canonical(b)) mismatched.push({ seq, ws: a, polling: b });
  }
  const all = [...held.ws, ...held.polling];
  const summary = (points) => ({
    count: points.length, firstSeq: points[0].seq, lastSeq: points.at(-1).seq,
    samplers: [...new Set(points.map((p) => p.sampler))],
    workerSets: [...new Set(points.map((p) => Object.keys(p.workers).sort().join(",")))],
  });

  const screenshots = {};
  for (const [name, { page }] of Object.entries(pages)) {
    screenshots[name] = join(outDir, `rtmonitor-${name}.png`);
    await page.screenshot({ path: screenshots[name], fullPage: true, timeout: left() });
  }

  const result = { type: "result", pages: {}, overlap: {}, screenshots };
  for (const [name, { page, problems, target }] of Object.entries(pages)) {
    result.pages[name] = {
      url: target, state: await pageState(page), problems, charts: charts[name], points: summary(held[name]),
    };
  }
  const last = held.ws.at(-1);
  result.overlap = {
    from: lo, to: hi, count: Math.max(0, hi - lo + 1), missing, mismatched: mismatched.slice(0, 5),
    mismatchedCount: mismatched.length,
    samplers: [...new Set(all.map((p) => p.sampler))],
    lastPoint: last,
    // seconds between consecutive points: about 1 s with one sampler
    intervals: held.ws.slice(1).map((p, i) => Math.round((p.t - held.ws[i].t) * 1000) / 1000),
  };
  say(result);
}

try {
  await main();
  clearTimeout(deadline);
  await browser.close();
  process.exit(0);
} catch (err) {
  clearTimeout(deadline);
  say({ type: "error", reason: String(err && err.stack ? err.stack : err), pages: await diagnostics() });
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
