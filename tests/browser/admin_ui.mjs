// The Socket.IO Admin UI (npm @socket.io/admin-ui, served by the chat demo) in headless
// Chromium (playwright-core), for tests/test_admin_ui.py.
//
//   node tests/browser/admin_ui.mjs URL PASSWORD SOCKETS SERVERS OUT_DIR TIMEOUT_SECONDS
//
// Opens URL/admin-ui/, logs in as "admin" with PASSWORD to the server at URL, then waits
// until the UI lists SOCKETS sockets in namespace "/" and SERVERS servers (one per worker).
// Reads both from the UI's own store (Vuex, on the root element), saves
// OUT_DIR/admin-ui.png, prints one JSON line: {"type":"result","sockets":[ids],
// "servers":[{serverId, pid, clientsCount}]} (exit 0) or {"type":"error",...} (exit 1).
// Run with cwd = the repo, so node_modules resolves.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, password, socketsArg, serversArg, outDir, timeoutArg] = process.argv.slice(2);
const wantSockets = Number(socketsArg);
const wantServers = Number(serversArg);
const timeoutMs = Number(timeoutArg) * 1000;
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const say = (message) => process.stdout.write(JSON.stringify(message) + "\n");

if (!url || !password || !(wantSockets >= 0) || !(wantServers > 0) || !outDir || !(timeoutMs > 0)) {
  say({ type: "error", reason: "usage: admin_ui.mjs URL PASSWORD SOCKETS SERVERS OUT_DIR TIMEOUT_SECONDS" });
  process.exit(1);
}

const started = Date.now();
const left = () => Math.max(1000, timeoutMs - (Date.now() - started) - 3000);
let browser = null;
let page = null;
const problems = [];

async function uiState() {
  return page.evaluate(() => {
    const root = document.querySelector("#app");
    const store = root && root.__vue__ && root.__vue__.$store;
    if (!store) return null;
    const nsp = store.state.main.namespaces.find((n) => n.name === "/");
    return {
      connected: store.state.connection.connected,
      sockets: nsp ? nsp.sockets.map((s) => s.id) : [],
      servers: store.state.servers.servers.map((s) => ({
        serverId: s.serverId, pid: s.pid, clientsCount: s.clientsCount,
      })),
    };
  });
}

async function finish(message, code) {
  if (page) {
    try {
      mkdirSync(outDir, { recursive: true });
      await page.screenshot({ path: join(outDir, "admin-ui.png"), fullPage: true });
    } catch (err) {
      problems.push(`screenshot: ${err.message}`);
    }
  }
  if (browser) await browser.close().catch(() => {});
  say({ ...message, problems });
  process.exit(code);
}

setTimeout(() => finish({ type: "error", reason: "timeout" }, 1), timeoutMs).unref();

try {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  page = await browser.newPage();
  page.on("pageerror", (err) => problems.push(`pageerror: ${err.message}`));
  // The UI connects to the server it remembers; the login form then asks for the credentials.
  await page.addInitScript((server) => {
    localStorage.setItem("server_url", server);
    localStorage.setItem("namespace", "/admin");
    localStorage.setItem("ws_only", "true");
  }, url);
  await page.goto(`${url}/admin-ui/`, { timeout: left() });
  await page.getByLabel("Username").fill("admin", { timeout: left() });
  await page.getByLabel("Password").fill(password, { timeout: left() });
  await page.getByRole("button", { name: "Connect" }).click({ timeout: left() });
  let state = null;
  while (Date.now() - started < timeoutMs - 3000) {
    state = await uiState();
    if (state && state.connected && state.sockets.length === wantSockets && state.servers.length === wantServers) {
      await finish({ type: "result", ...state }, 0);
    }
    await page.waitForTimeout(200);
  }
  await finish({ type: "error", reason: "the UI never showed what was expected", state }, 1);
} catch (err) {
  await finish({ type: "error", reason: String(err?.message ?? err) }, 1);
}
