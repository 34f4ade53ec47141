// socket.io-client v4 clients over long-polling only, each emitting a burst of events at once,
// for tests/test_polling_burst.py.
//
//   node tests/js/burst_client.mjs URL CLIENTS EVENTS TIMEOUT_SECONDS
//
// Connects CLIENTS clients one after the other (transports: ["polling"]), then
// each emits "burst_item" n for n = 0..EVENTS-1 in one synchronous loop (the
// client batches them into as few POSTs as its maxPayload allows), then asks
// "burst_seen" (with ack) until the server has handled EVENTS items for every
// client or TIMEOUT_SECONDS passed. Prints one JSON line and exits 0:
//   {"type":"result","clients":[{"pid","sid","seen":[n...]}...]}
// or {"type":"error",...} and exits 1. Run with cwd = the repo.
import { io } from "socket.io-client";

const [url, clientsArg, eventsArg, timeoutArg] = process.argv.slice(2);
const clientCount = Number(clientsArg);
const events = Number(eventsArg);
const deadline = Date.now() + Number(timeoutArg) * 1000;

const say = (message) => process.stdout.write(JSON.stringify(message) + "\n");
const fail = (reason, detail = {}) => {
  say({ type: "error", reason, ...detail });
  process.exit(1);
};
if (!url || !(clientCount > 0) || !(events > 0) || !(deadline > Date.now())) {
  fail("usage: burst_client.mjs URL CLIENTS EVENTS TIMEOUT_SECONDS", { argv: process.argv.slice(2) });
}
setTimeout(() => fail("timeout"), deadline - Date.now()).unref();

async function connect() {
  const socket = io(url, { forceNew: true, reconnection: false, transports: ["polling"] });
  socket.on("connect_error", (err) => fail("connect_error", { message: String(err?.message) }));
  await new Promise((resolve) => socket.once("connect", resolve));
  return socket;
}

const sockets = [];
for (let i = 0; i < clientCount; i++) sockets.push(await connect());
for (const socket of sockets) {
  for (let n = 0; n < events; n++) socket.emit("burst_item", n);
}
const results = await Promise.all(sockets.map(async (socket) => {
  let seen = { pid: null, seen: [] };
  while (seen.seen.length < events && Date.now() < deadline - 3000) {
    try {
      seen = await socket.timeout(2000).emitWithAck("burst_seen", null);
    } catch {
      continue; // lost with the burst (the bug this checks): ask again
    }
    if (seen.seen.length < events) await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { pid: seen.pid, sid: socket.id, seen: seen.seen };
}));
say({ type: "result", clients: results });
for (const socket of sockets) socket.disconnect();
setTimeout(() => process.exit(0), 500);
