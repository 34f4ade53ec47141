// node ws (npm) against barrel's WebSocket, for tests/test_websocket_interop.py.
//
//   node tests/js/ws_interop.mjs WS_URL MODE
//
// MODE "on" / "off": permessage-deflate offered or not, to the echo app: text
// and binary messages of each size, fragmented messages, a ping, invalid
// UTF-8 in a text frame, a close with code 4000. MODE "engineio": deflate on,
// the engine.io and socket.io handshakes, then a broadcast of 5,000 bytes that
// must come back. Prints one JSON line per case: {"case", ...observations}
// (bytesRead: the bytes the socket read for the answer). The Python test
// judges them. Run with cwd = the repo.
import WebSocket from "ws";

const [url, mode] = process.argv.slice(2);
const SIZES = [0, 1, 125, 126, 1023, 1024, 65535, 65536, 1 << 20];
const say = (message) => process.stdout.write(JSON.stringify(message) + "\n");

function text(size) {
  // As tests/test_websocket_interop.py's _text: size bytes of UTF-8, compressible.
  const unit = "barrel é ✓ ";
  const unitBytes = Buffer.byteLength(unit);
  const body = unit.repeat(Math.floor(size / unitBytes));
  return body + "x".repeat(size - Buffer.byteLength(body));
}

function binary(size) {
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i++) out[i] = i % 256;
  return out;
}

function open(deflate) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, {
      perMessageDeflate: deflate ? { threshold: 0 } : false, // compress every message we send
      maxPayload: 64 << 20,
    });
    // The server's answer as sent (ws.extensions names the extensions only).
    // Messages are queued from the start: engine.io speaks first, right after the handshake.
    ws.inbox = [];
    ws.waiters = [];
    ws.on("message", (data, isBinary) => {
      const waiter = ws.waiters.shift();
      if (waiter) waiter({ data, isBinary });
      else ws.inbox.push({ data, isBinary });
    });
    ws.once("upgrade", (response) => { ws.answer = response.headers["sec-websocket-extensions"] || ""; });
    ws.once("open", () => resolve(ws));
    ws.once("error", reject);
  });
}

function next(ws) {
  if (ws.inbox.length) return Promise.resolve(ws.inbox.shift());
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no message within 10 s")), 10000);
    ws.waiters.push((message) => {
      clearTimeout(timer);
      resolve(message);
    });
  });
}

function closed(ws) {
  return new Promise((resolve) => ws.once("close", (code, reason) => resolve({ code, reason: String(reason) })));
}

async function echo(ws, name, payload, isBinary) {
  const before = ws._socket.bytesRead;
  ws.send(payload, { binary: isBinary });
  const got = await next(ws);
  const same = got.isBinary === isBinary &&
    (isBinary ? Buffer.compare(got.data, payload) === 0 : got.data.toString("utf8") === payload);
  say({ case: name, same, bytesRead: ws._socket.bytesRead - before });
}

async function echoChecks(deflate) {
  let ws = await open(deflate);
  say({ case: "open", extensions: ws.answer });
  for (const size of SIZES) {
    await echo(ws, `text ${size}`, text(size), false);
    await echo(ws, `binary ${size}`, binary(size), true);
  }
  // One message in three frames (with deflate, compressed as one message).
  ws.send("κόσ", { fin: false });
  ws.send("με ", { fin: false });
  ws.send(text(70000), { fin: true });
  let got = await next(ws);
  say({ case: "fragmented text", same: got.data.toString("utf8") === "κόσμε " + text(70000) });
  ws.send(binary(300), { binary: true, fin: false });
  ws.send(binary(3000), { binary: true, fin: true });
  got = await next(ws);
  say({ case: "fragmented binary", same: Buffer.compare(got.data, Buffer.concat([binary(300), binary(3000)])) === 0 });
  const pong = new Promise((resolve) => ws.once("pong", (data) => resolve(String(data))));
  ws.ping("are you there");
  say({ case: "ping", pong: await pong });
  const end = closed(ws);
  ws.close(4000, "bye");
  say({ case: "close", ...(await end) });

  ws = await open(deflate);
  const cut = closed(ws);
  ws.send(Buffer.from([0x63, 0x61, 0x66, 0xc3, 0x28]), { binary: false }); // "caf" + a broken sequence
  say({ case: "invalid utf-8", ...(await cut) });
}

async function engineioCheck() {
  const ws = await open(true);
  say({ case: "open", extensions: ws.answer });
  const openPacket = String((await next(ws)).data);
  ws.send("40");
  const connected = String((await next(ws)).data);
  const token = text(5000);
  const before = ws._socket.bytesRead;
  ws.send("42" + JSON.stringify(["broadcast", { token }]));
  let news = null;
  for (let i = 0; i < 10 && news === null; i++) {
    const packet = String((await next(ws)).data);
    if (packet.startsWith("42")) news = JSON.parse(packet.slice(2));
  }
  say({ case: "engine.io", open: openPacket, connected, token, news, bytesRead: ws._socket.bytesRead - before });
  ws.close();
}

try {
  if (mode === "engineio") await engineioCheck();
  else await echoChecks(mode === "on");
  process.exit(0);
} catch (err) {
  say({ case: "error", message: String(err && err.stack || err) });
  process.exit(1);
}
