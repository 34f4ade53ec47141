// N socket.io-client v4 clients for tests/test_js_client.py, driven over stdio as JSON lines.
//
//   node tests/js/sio_client.mjs URL polling|websocket|default COUNT TIMEOUT_SECONDS
//
// Prints {"type":"ready","clients":[{index,pid,sid,transport}...]} once all are
// connected and identified, then answers commands read from stdin, one a line:
//   {"cmd":"news?"}       -> {"type":"news","news":[[payloads of client 0], ...]}
//   {"cmd":"transports?"} -> {"type":"transports","transports":[names],"sids":[socket ids]}
//   {"cmd":"join_stream"} -> each client emits join_stream (with ack); -> {"type":"joined"}
//   {"cmd":"streams?"}    -> {"type":"streams","streams":[{tag: {count, last, outOfOrder,
//                            duplicates, firstAt, lastAt}} per client]} for the "seq" events
//                            {tag, n} received (times in ms, performance.now())
//   {"cmd":"counters?"}   -> {"type":"counters","counters":[bus_counters answer per client]}
//                            (each client asks its worker: {pid, counters, broadcaster})
//   {"cmd":"connections?"} -> {"type":"connections","connections":[[{sid, recovered, pid} per
//                            reconnection] per client]}
//   {"cmd":"exit"}        -> disconnects all, exits 0 (so does the end of stdin)
// A connect error, a failed whoami, a startup timeout or a bad command print
// {"type":"error",...} and exit 1. Run with cwd = the repo, so node_modules resolves.
import { createInterface } from "node:readline";
import { io } from "socket.io-client";

const [url, mode, countArg, timeoutArg] = process.argv.slice(2);
const count = Number(countArg);
const timeoutMs = Number(timeoutArg) * 1000;

const say = (message) => process.stdout.write(JSON.stringify(message) + "\n");
const fail = (reason, detail = {}) => {
  say({ type: "error", reason, ...detail });
  process.exit(1);
};

if (!url || !["polling", "websocket", "default"].includes(mode) || !(count > 0) || !(timeoutMs > 0)) {
  fail("usage: sio_client.mjs URL polling|websocket|default COUNT TIMEOUT_SECONDS", { argv: process.argv.slice(2) });
}

const startup = setTimeout(() => fail("startup timeout", { seconds: timeoutMs / 1000 }), timeoutMs);

async function connect(index) {
  // auth and query name the client: the cluster API reports them (tests/test_cluster.py).
  const options = {
    forceNew: true, reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 500,
    auth: { client: index }, query: { client: String(index) },
  };
  if (mode !== "default") options.transports = [mode];
  const socket = io(url, options);
  const client = { index, socket, pid: null, sid: null, news: [], streams: {}, connections: [] };
  socket.on("connect_error", (err) => {
    if (client.pid === null) {  // the first connection; later ones are retried by the client
      fail("connect_error", { index, message: String(err?.message), description: String(err?.description ?? "") });
    }
  });
  // Each connection after the first: which worker took it, its id, and whether the session
  // was recovered (connection state recovery).
  socket.on("connect", async () => {
    if (client.pid === null) return;
    const entry = { sid: socket.id, recovered: socket.recovered, pid: null, session: null };
    client.connections.push(entry);
    try {
      const me = await socket.timeout(10000).emitWithAck("whoami", null);
      entry.session = me.session;
      entry.pid = me.pid;
    } catch (err) {
      entry.error = String(err?.message ?? err);
    }
  });
  socket.on("question", (_question, ack) => ack(`js ${client.pid}`));
  socket.on("news", (payload) => client.news.push(payload));
  socket.on("seq", ({ tag, n }) => {
    const now = performance.now();
    const s = (client.streams[tag] ??= {
      count: 0, last: -1, outOfOrder: 0, duplicates: 0, firstAt: now, lastAt: now, seen: new Set(),
    });
    s.lastAt = now;
    if (s.seen.has(n)) s.duplicates++;
    else s.seen.add(n);
    if (n !== s.last + 1) s.outOfOrder++;
    s.last = n;
    s.count++;
  });
  await new Promise((resolve) => socket.once("connect", resolve));
  const me = await socket.timeout(10000).emitWithAck("whoami", null);
  // Session data for the server to keep: a recovered session must bring it back.
  await socket.timeout(10000).emitWithAck("save_session", { client: index });
  client.pid = me.pid;
  client.sid = me.sid;
  return client;
}

// One after the other: handshakes sent together tend to be accepted by one worker.
const clients = [];
try {
  for (let i = 0; i < count; i++) clients.push(await connect(i));
} catch (err) {
  fail("whoami failed", { message: String(err?.message ?? err) });
}
clearTimeout(startup);

const transportOf = (client) => client.socket.io.engine?.transport?.name ?? null;
say({
  type: "ready",
  clients: clients.map((c) => ({ index: c.index, pid: c.pid, sid: c.sid, transport: transportOf(c) })),
});

const commands = {
  "news?": () => say({ type: "news", news: clients.map((c) => c.news) }),
  "connections?": () => say({ type: "connections", connections: clients.map((c) => c.connections) }),
  "transports?": () =>
    say({ type: "transports", transports: clients.map(transportOf), sids: clients.map((c) => c.socket.id ?? null) }),
  join_stream: async () => {
    await Promise.all(clients.map((c) => c.socket.timeout(10000).emitWithAck("join_stream", null)));
    say({ type: "joined" });
  },
  "streams?": () =>
    say({
      type: "streams",
      streams: clients.map((c) =>
        Object.fromEntries(Object.entries(c.streams).map(([tag, { seen, ...stats }]) => [tag, stats]))),
    }),
  "counters?": async () => {
    try {
      const answers = await Promise.all(
        clients.map((c) => c.socket.timeout(10000).emitWithAck("bus_counters", null)));
      say({ type: "counters", counters: answers });
    } catch (err) {
      fail("bus_counters failed", { message: String(err?.message ?? err) });
    }
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
  const handler = commands[cmd];
  if (!handler) fail("unknown command", { line });
  handler();
});
// On "exit" or when stdin ends (the test is gone): disconnect all, exit 0
// once the last packets are out, or after 1 s at most.
lines.on("close", () => {
  process.stdin.destroy();
  for (const c of clients) c.socket.disconnect();
  setTimeout(() => process.exit(0), 1000).unref();
});
