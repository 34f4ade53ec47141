// Soak load for bench/soak.py: ~TARGET socket.io-client v4 clients, churning, with broadcasts.
//
//   node bench/js/soak_clients.mjs URL TARGET RATE DRAIN_SECONDS
//
// 50 "stable" clients never churn (reconnection on, so a drop shows up as missing
// broadcasts); the others (reconnection off) are churned: every second ~1% of them
// are disconnected at random and new ones connected, spread over the second.
// 20% of clients are polling-only, the others use the default transports
// (polling, then the WebSocket upgrade). 5 stable clients emit "broadcast"
// {seq, t} at RATE per second in total; every client counts "news".
//
// JSON lines on stdout:
//   {"type":"ready",...}   once all TARGET clients are connected (broadcasts and churn start then)
//   {"type":"status",...}  every 10 s: counts so far; "stable" checks, at each stable client,
//                          the broadcasts sent more than 5 s ago: missing and duplicates must be 0
//   {"type":"final",...}   after {"cmd":"stop"}: churn and broadcasts stop, DRAIN_SECONDS later
//                          the same as a status line, checking every broadcast sent
//   {"type":"error",...}   then exit 1 (startup timeout, bad command)
// {"cmd":"exit"} on stdin (or the end of stdin) disconnects all and exits 0.
// Run with cwd = the repo, so node_modules resolves.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const STABLE = 50;
const SENDERS = 5;
const POLLING_ONLY_SHARE = 0.2;
const CHURN_SHARE = 0.01;
const GRACE_MS = 5000;
const STATUS_MS = 10000;
const CONNECT_LANES = 10;
const STARTUP_MS = 300000;

const [url, targetArg, rateArg, drainArg] = process.argv.slice(2);
const target = Number(targetArg);
const rate = Number(rateArg);
const drainMs = Number(drainArg) * 1000;

const say = (message) => process.stdout.write(JSON.stringify(message) + "\n");
const fail = (reason, detail = {}) => {
  say({ type: "error", reason, ...detail });
  process.exit(1);
};
if (!url || !(target > STABLE) || !(rate > 0) || !(drainMs >= 0)) {
  fail(`usage: soak_clients.mjs URL TARGET(>${STABLE}) RATE DRAIN_SECONDS`, { argv: process.argv.slice(2) });
}

const stats = {
  connects_ok: 0, connects_failed: 0, connect_errors: {}, disconnects: 0, drops: {},
  broadcasts_sent: 0, broadcasts_acked: 0, broadcasts_failed: 0, news_received: 0,
};
const bump = (table, key) => { table[key] = (table[key] ?? 0) + 1; };
const stable = []; // never churned
const churners = new Set(); // open or opening
let reserved = 0; // churners to be opened within the current second
const sentAt = []; // sentAt[seq] = performance.now() when emitted
let latencies = []; // ms, news at stable clients since the last status line
let stoppedAt = null; // performance.now() at {"cmd":"stop"}

function open(isStable) {
  const options = { forceNew: true, reconnection: isStable };
  const pollingOnly = isStable ? stable.length % 5 === 0 : Math.random() < POLLING_ONLY_SHARE;
  if (pollingOnly) options.transports = ["polling"];
  const socket = io(url, options);
  const client = { socket, isStable, everConnected: false, reconnects: 0, counts: new Uint8Array(1024) };
  client.ready = new Promise((resolve) => {
    socket.on("connect", () => {
      if (client.everConnected) client.reconnects++;
      else stats.connects_ok++;
      client.everConnected = true;
      resolve(true);
    });
    socket.on("connect_error", (err) => {
      stats.connects_failed++;
      bump(stats.connect_errors, String(err?.message));
      if (!isStable) {
        churners.delete(client);
        resolve(false);
      }
    });
  });
  socket.on("disconnect", (reason) => {
    if (reason !== "io client disconnect") bump(stats.drops, `${isStable ? "stable" : "churner"}: ${reason}`);
    if (!isStable) churners.delete(client);
  });
  socket.on("news", (payload) => {
    stats.news_received++;
    if (!isStable) return;
    const seq = payload.seq;
    if (seq >= client.counts.length) {
      const bigger = new Uint8Array(Math.max(seq + 1, client.counts.length * 2));
      bigger.set(client.counts);
      client.counts = bigger;
    }
    if (client.counts[seq] < 255) client.counts[seq]++;
    latencies.push(Date.now() - payload.t);
  });
  if (isStable) stable.push(client);
  else churners.add(client);
  return client;
}

function close(client) {
  churners.delete(client);
  client.socket.disconnect();
  stats.disconnects++;
}

// --- startup: stable clients one by one (spreads them over workers), then the rest in lanes.
const startedAt = performance.now();
const startup = setTimeout(() => fail("startup timeout", { seconds: STARTUP_MS / 1000, ...stats }), STARTUP_MS);
const stablePids = {};
while (stable.length < STABLE) {
  const client = open(true);
  await client.ready;
  const me = await client.socket.timeout(10000).emitWithAck("whoami", null).catch(() => ({ pid: "no answer" }));
  bump(stablePids, me.pid);
}
const churnTarget = target - STABLE;
const lane = async () => {
  while (churners.size < churnTarget) await open(false).ready;
};
await Promise.all(Array.from({ length: CONNECT_LANES }, lane));
clearTimeout(startup);

const connectedCount = () => [...stable, ...churners].filter((c) => c.socket.connected).length;
say({ type: "ready", connected: connectedCount(), seconds: (performance.now() - startedAt) / 1000,
  stable_pids: stablePids, ...stats });

// --- broadcasts: RATE per second in total, round robin over the senders.
const broadcastStart = performance.now();
const broadcaster = setInterval(() => {
  const due = Math.floor(((performance.now() - broadcastStart) * rate) / 1000);
  while (sentAt.length < due) {
    const seq = sentAt.length;
    sentAt.push(performance.now());
    stats.broadcasts_sent++;
    stable[seq % SENDERS].socket.timeout(10000).emit("broadcast", { seq, t: Date.now() }, (err) => {
      if (err) stats.broadcasts_failed++;
      else stats.broadcasts_acked++;
    });
  }
}, 20);

// --- churn: every second close ~1% of the connected churners, then top up to the target.
const churner = setInterval(() => {
  const connected = [...churners].filter((c) => c.socket.connected);
  const k = Math.round(target * CHURN_SHARE);
  for (let i = 0; i < k && i < connected.length; i++) {
    const j = i + Math.floor(Math.random() * (connected.length - i));
    [connected[i], connected[j]] = [connected[j], connected[i]];
    close(connected[i]);
  }
  const need = churnTarget - churners.size - reserved;
  reserved += Math.max(0, need);
  for (let i = 0; i < need; i++) {
    setTimeout(() => {
      reserved--;
      open(false);
    }, (i * 1000) / need);
  }
}, 1000);

function report(type, checkedSeqs) {
  let received = 0;
  let missing = 0;
  let duplicates = 0;
  for (const c of stable) {
    for (let seq = 0; seq < c.counts.length; seq++) {
      const n = c.counts[seq];
      received += n;
      if (n > 1) duplicates += n - 1;
      if (n === 0 && seq < checkedSeqs) missing++;
    }
  }
  latencies.sort((a, b) => a - b);
  const pick = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? null;
  const transports = {};
  for (const c of [...stable, ...churners]) {
    if (c.socket.connected) bump(transports, c.socket.io.engine?.transport?.name ?? "none");
  }
  say({
    type, elapsed_s: ((stoppedAt ?? performance.now()) - broadcastStart) / 1000, target, connected: connectedCount(), transports,
    ...stats,
    stable: {
      clients: STABLE, connected: stable.filter((c) => c.socket.connected).length,
      reconnects: stable.reduce((sum, c) => sum + c.reconnects, 0),
      checked_seqs: checkedSeqs, expected: checkedSeqs * STABLE, received, missing, duplicates,
      latency_ms: { p50: pick(0.5), p99: pick(0.99), max: latencies.at(-1) ?? null },
    },
  });
  latencies = [];
}

const settled = () => {
  const cutoff = performance.now() - GRACE_MS;
  let n = 0;
  while (n < sentAt.length && sentAt[n] <= cutoff) n++;
  return n;
};
const status = setInterval(() => report("status", settled()), STATUS_MS);

const commands = {
  stop: () => {
    stoppedAt = performance.now();
    clearInterval(broadcaster);
    clearInterval(churner);
    clearInterval(status);
    setTimeout(() => report("final", sentAt.length), drainMs);
  },
  exit: () => lines.close(),
};
const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  let cmd;
  try {
    cmd = JSON.parse(line).cmd;
  } catch {
    fail("bad command line", { line });
  }
  if (!commands[cmd]) fail("unknown command", { line });
  commands[cmd]();
});
lines.on("close", () => {
  clearInterval(broadcaster);
  clearInterval(churner);
  clearInterval(status);
  for (const c of [...stable, ...churners]) c.socket.disconnect();
  setTimeout(() => process.exit(0), 1000).unref();
});
