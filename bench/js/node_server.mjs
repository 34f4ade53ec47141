// The Node socket.io v4 peer of bench/peers: the same app logic as bench/peers/app.py.
//
//   node bench/js/node_server.mjs PORT PROCESSES
//
// PROCESSES = 1: one process. PROCESSES > 1: node's cluster module, the primary
// balances connections with @socket.io/sticky (least connections) and the
// workers share rooms and broadcasts through @socket.io/cluster-adapter.
// Default socket.io server options (perMessageDeflate off). On connect the server sends "hi" {pid};
// "blast" {rate, seconds, tag} emits `rate` 100-byte broadcasts "b" a second.
import cluster from "node:cluster";
import http from "node:http";
import { Server } from "socket.io";
import { setupMaster, setupWorker } from "@socket.io/sticky";
import { createAdapter, setupPrimary } from "@socket.io/cluster-adapter";

const [portArg, processesArg] = process.argv.slice(2);
const port = Number(portArg);
const processes = Number(processesArg ?? 1);
const now = () => performance.timeOrigin + performance.now();
const padLength = 100 - JSON.stringify({ t: now(), tag: 0, pad: "" }).length;
const PAD = "x".repeat(padLength);

function app(io) {
  io.on("connection", (socket) => {
    socket.emit("hi", { pid: process.pid });
    socket.on("blast", ({ rate, seconds, tag }, ack) => {
      const total = Math.round(rate * seconds);
      const start = performance.now();
      let sent = 0;
      const tick = () => {
        const due = Math.min(total, Math.floor(((performance.now() - start) * rate) / 1000) + 1);
        while (sent < due) {
          io.emit("b", { t: now(), tag, pad: PAD });
          sent++;
        }
        if (sent < total) setTimeout(tick, Math.max(0, start + (sent * 1000) / rate - performance.now()));
        else ack({ sent, elapsed: (performance.now() - start) / 1000, pid: process.pid });
      };
      tick();
    });
  });
}

// One JSON line on stdout once every process listens: {"type":"ready","pids":[...]}.
const say = (message) => process.stdout.write(JSON.stringify(message) + "\n");

if (processes <= 1) {
  const server = http.createServer();
  app(new Server(server));
  server.listen(port, "127.0.0.1", () => say({ type: "ready", pids: [process.pid] }));
} else if (cluster.isPrimary) {
  const server = http.createServer();
  setupMaster(server, { loadBalancingMethod: "least-connection" });
  setupPrimary();
  // sticky hands the first chunk of each connection over IPC as a Buffer: it needs "advanced" serialization.
  cluster.setupPrimary({ serialization: "advanced" });
  const pids = [];
  cluster.on("message", (worker, message) => {
    if (message !== "listening") return;
    pids.push(worker.process.pid);
    if (pids.length === processes) server.listen(port, "127.0.0.1", () => say({ type: "ready", pids }));
  });
  for (let i = 0; i < processes; i++) cluster.fork();
  cluster.on("exit", () => process.exit(1)); // no respawn: a dead worker must fail the run
} else {
  const server = http.createServer();
  const io = new Server(server);
  io.adapter(createAdapter());
  setupWorker(io);
  app(io);
  process.send("listening");
}
