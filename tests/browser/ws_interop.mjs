// Chromium's own WebSocket against barrel's, for tests/test_websocket_interop.py.
//
//   node tests/browser/ws_interop.mjs WS_URL MODE CHROMIUM_PATH
//
// Headless Chromium (playwright-core) opens a WebSocket from a page of the server's origin.
// MODE "echo": text and binary messages of each size go to the echo app and
// must come back as sent; then a close with code 4000. MODE "engineio": the
// engine.io and socket.io handshakes, then a broadcast of 5,000 bytes. Prints
// one JSON line {extensions, echoes | open/news/token, closeCode, errors} and
// exits 0; exits 1 with {"error"} when the browser or the page fails.
import { chromium } from "playwright-core";

const [url, mode, executablePath] = process.argv.slice(2);
const SIZES = [0, 1, 125, 126, 1023, 1024, 65535, 65536, 1 << 20];

async function inPage({ url, mode, sizes }) {
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error("WebSocket failed to open"));
  });
  const next = () => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no message within 10 s")), 10000);
    ws.onmessage = (event) => { clearTimeout(timer); resolve(event.data); };
  });
  const text = (size) => {
    const unit = "barrel é ✓ ";
    const unitBytes = new TextEncoder().encode(unit).length;
    const body = unit.repeat(Math.floor(size / unitBytes));
    return body + "x".repeat(size - new TextEncoder().encode(body).length);
  };
  const result = { extensions: ws.extensions };
  if (mode === "engineio") {
    result.open = await next();
    ws.send("40");
    result.connected = await next();
    result.token = text(5000);
    ws.send("42" + JSON.stringify(["broadcast", { token: result.token }]));
    for (let i = 0; i < 10 && !result.news; i++) {
      const packet = await next();
      if (packet.startsWith("42")) result.news = JSON.parse(packet.slice(2));
    }
    ws.close();
    return result;
  }
  result.echoes = [];
  for (const size of sizes) {
    const sentText = text(size);
    ws.send(sentText);
    const gotText = await next();
    const blob = new Uint8Array(size).map((_, i) => i % 256);
    ws.send(blob);
    const gotBlob = new Uint8Array(await next());
    const sameBlob = gotBlob.length === size && gotBlob.every((b, i) => b === blob[i]);
    result.echoes.push({ size, same: gotText === sentText && sameBlob });
  }
  const closed = new Promise((resolve) => { ws.onclose = (event) => resolve(event.code); });
  ws.close(4000, "bye");
  result.closeCode = await closed;
  return result;
}

let browser = null;
try {
  browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
  const page = await browser.newPage();
  // From the server's own origin: engine.io refuses WebSockets from other origins.
  const origin = new URL(url);
  await page.goto(`http://${origin.host}/ready-check`);
  const errors = [];
  page.on("pageerror", (err) => errors.push(err.message));
  page.on("console", (msg) => { if (msg.type() === "error") errors.push(msg.text()); });
  const result = await page.evaluate(inPage, { url, mode, sizes: SIZES });
  process.stdout.write(JSON.stringify({ ...result, errors }) + "\n");
  await browser.close();
  process.exit(0);
} catch (err) {
  process.stdout.write(JSON.stringify({ error: String(err && err.stack || err) }) + "\n");
  if (browser) await browser.close().catch(() => {});
  process.exit(1);
}
