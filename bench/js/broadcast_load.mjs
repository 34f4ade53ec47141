// Load generator of bench/peers: WebSocket-only socket.io-client v4 clients that record broadcasts.
//
//   node bench/js/broadcast_load.mjs URL
//
// Clients use the default client options (so they offer permessage-deflate, as
// browsers do) with transports ["websocket"]. Every server sends "hi" {pid} on
// connect, which tells the client its worker. JSON-line commands on stdin, one
// answer line each on stdout:
//   {"cmd":"connect","n":N,"lanes":L,"cap":C|null} -> "connected": open clients (L at a time)
//       until this process holds N; with a cap, a client landing on a worker that already
//       holds C of ours is closed and replaced (spreads clients over workers).
//   {"cmd":"trim","per_pid":K}          -> "trimmed": keep K clients per worker, close the others
//   {"cmd":"arm","tag":T}               -> "armed": count broadcasts with tag T from now on
//   {"cmd":"blast","pid":P,"rate":R,"seconds":S,"tag":T} -> "blasted": a client held by worker
//       P asks it to broadcast; the answer comes when the server has sent them all
//   {"cmd":"collect","expected":E,"timeout":W} -> "collected": once every client got E broadcasts
//       (or W seconds passed): counts and the one-way latency histogram (0.1 ms buckets)
//   {"cmd":"exit"} (or the end of stdin): close all and exit 0.
// Run with cwd = the repo, so node_modules resolves.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const url = process.argv[2];
const BUCKETS_PER_MS = 10;
const HIST_SIZE = 120000 * BUCKETS_PER_MS; // 120 s; later ones land in the last bucket
// A client that has not got "hi" by then counts as failed and is closed: a handshake can stall
// after the transport opened (seen with the Node cluster), where the client's own timeout does not apply.
const HANDSHAKE_TIMEOUT_MS = 30000;
const now = () => performance.timeOrigin + performance.now();
const say = (message) => process.stdout.write(JSON.stringify(message) + "\n");
const bump = (table, key, by = 1) => { table[key] = (table[key] ?? 0) + by; };

const clients = new Set(); // connected (or being connected)
const hist = new Uint32Array(HIST_SIZE);
let tag = null;
let received = 0;
let stale = 0; // broadcasts of another tag (a previous step's stragglers)
let maxMs = 0;
let drops = {}; // unexpected disconnects, by reason

function open() {
  const socket = io(url, { transports: ["websocket"], forceNew: true, reconnection: false, timeout: 60000 });
  const client = { socket, pid: null };
  clients.add(client);
  client.ready = new Promise((resolve) => {
    const fail = (reason) => {
      clearTimeout(timer);
      clients.delete(client);
      client.error = reason;
      socket.disconnect();
      resolve(false);
    };
    const timer = setTimeout(() => fail(`no "hi" within ${HANDSHAKE_TIMEOUT_MS / 1000} s`), HANDSHAKE_TIMEOUT_MS);
    socket.on("hi", ({ pid }) => {
      clearTimeout(timer);
      client.pid = pid;
      resolve(true);
    });
    socket.on("connect_error", (err) => fail(String(err?.message)));
  });
  socket.on("disconnect", (reason) => {
    clients.delete(client);
    if (reason !== "io client disconnect") bump(drops, reason);
  });
  socket.on("b", (p) => {
    if (p.tag !== tag) {
      stale++;
      return;
    }
    received++;
    const ms = now() - p.t;
    if (ms > maxMs) maxMs = ms;
    hist[Math.min(HIST_SIZE - 1, Math.max(0, Math.floor(ms * BUCKETS_PER_MS)))]++;
  });
  return client;
}

function close(client) {
  clients.delete(client);
  client.socket.disconnect();
}

const byPid = () => {
  const counts = {};
  for (const c of clients) if (c.pid !== null) bump(counts, c.pid);
  return counts;
};

async function connect({ n, lanes, cap }) {
  const started = performance.now();
  const counts = byPid();
  const errors = {};
  let handshakes = 0;
  let failed = 0;
  const attemptsLeft = () => handshakes + failed < 5 * n + 100;
  const lane = async () => {
    while (clients.size < n && attemptsLeft()) {
      const client = open(); // in `clients` at once, so lanes do not overshoot n together
      const ok = await client.ready;
      if (!ok) {
        failed++;
        bump(errors, client.error);
        continue;
      }
      handshakes++;
      if (cap !== null && (counts[client.pid] ?? 0) >= cap) close(client);
      else bump(counts, client.pid);
    }
  };
  await Promise.all(Array.from({ length: lanes }, lane));
  const extensions = {};
  for (const c of clients) bump(extensions, c.socket.io.engine?.transport?.ws?.extensions || "none");
  say({
    type: "connected", clients: clients.size, by_pid: byPid(), handshakes, failed, errors,
    seconds: (performance.now() - started) / 1000, extensions,
  });
}

function trim({ per_pid: perPid }) {
  const kept = {};
  for (const c of [...clients]) {
    if ((kept[c.pid] ?? 0) >= perPid) close(c);
    else bump(kept, c.pid);
  }
  say({ type: "trimmed", by_pid: byPid() });
}

function arm(message) {
  tag = message.tag;
  received = 0;
  stale = 0;
  maxMs = 0;
  drops = {};
  hist.fill(0);
  say({ type: "armed", clients: clients.size });
}

async function blast({ pid, rate, seconds, tag: blastTag }) {
  const sender = [...clients].find((c) => c.pid === pid && c.socket.connected);
  if (!sender) return say({ type: "error", reason: `no client on worker ${pid}`, by_pid: byPid() });
  try {
    const answer = await sender.socket.timeout((seconds + 120) * 1000)
      .emitWithAck("blast", { rate, seconds, tag: blastTag });
    say({ type: "blasted", ...answer });
  } catch (err) {
    say({ type: "error", reason: `blast: ${err?.message}` });
  }
}

async function collect({ expected, timeout }) {
  const deadline = performance.now() + timeout * 1000;
  while (received < expected * clients.size && performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const buckets = {};
  for (let i = 0; i < HIST_SIZE; i++) if (hist[i]) buckets[i] = hist[i];
  say({
    type: "collected", clients: clients.size, received, stale, drops, max_ms: maxMs,
    bucket_ms: 1 / BUCKETS_PER_MS, buckets,
  });
}

const commands = { connect, trim, arm, blast, collect, exit: () => lines.close() };
const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  let message;
  try {
    message = JSON.parse(line);
  } catch {
    return say({ type: "error", reason: "bad command line", line });
  }
  const command = commands[message.cmd];
  if (!command) return say({ type: "error", reason: "unknown command", line });
  Promise.resolve(command(message)).catch((err) => say({ type: "error", reason: String(err?.stack ?? err) }));
});
lines.on("close", () => {
  for (const c of [...clients]) close(c);
  setTimeout(() => process.exit(0), 500).unref();
});
