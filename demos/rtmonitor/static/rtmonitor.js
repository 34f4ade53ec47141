// Server monitor page: points from the one sampler worker, plotted with Flot.
//
// ?transport=polling forces long-polling, ?transport=websocket forces
// WebSocket; without it socket.io polls first, then upgrades to WebSocket (the
// barrel worker routes every request of a session to the worker holding it).
//
// window.rtmonitor exposes what the page received, for tests and curious people:
//   points          [{seq, t, sampler, total, workers}] sorted by seq, each seq once
//   received        sample events received (history points not counted)
//   draws           times the charts were drawn; plotted: points in the plotted window
//   lastPlottedSeq  seq of the newest point drawn
//   transport       the engine.io transport in use; workerPid: the worker holding the socket
//   connects        connections made (reconnects included); errors: problems seen
//   fills           times a hole in the live seqs made the page ask for the kept points
(function () {
  "use strict";

  const WINDOW_SECONDS = 60;
  const GAP_SECONDS = 2.5; // points further apart than this are not joined
  const KEEP_POINTS = 600; // what window.rtmonitor.points keeps (10 minutes)
  const TOTAL_COLOR = "#222222";
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
  const MiB = 1024 * 1024;
  const GiB = 1024 * MiB;

  const $id = (id) => document.getElementById(id);
  const status = $id("status");
  const info = $id("info");

  const state = (window.rtmonitor = {
    points: [], received: 0, draws: 0, plotted: 0, lastPlottedSeq: null,
    transport: null, workerPid: null, connects: 0, errors: [], fills: 0,
  });

  function problem(text) {
    state.errors.push(text);
    status.className = "offline";
    status.textContent = text;
  }

  if (typeof io !== "function" || typeof jQuery !== "function" || typeof jQuery.plot !== "function") {
    problem("socket.io-client, jquery or flot missing: run `npm ci` in the repository root");
    return;
  }

  const forced = new URLSearchParams(window.location.search).get("transport");
  const options = forced === "polling" ? { transports: ["polling"] }
    : forced === "websocket" ? { transports: ["websocket"] } : {};
  const socket = io(options);

  const seen = new Set();
  const colors = new Map(); // worker pid -> color, kept while the page lives

  function colorOf(pid) {
    if (!colors.has(pid)) colors.set(pid, PALETTE[colors.size % PALETTE.length]);
    return colors.get(pid);
  }

  function valid(p) {
    return p && Number.isInteger(p.seq) && typeof p.t === "number" && p.total
      && typeof p.total.cpu === "number" && p.workers && typeof p.workers === "object";
  }

  function add(points) {
    let added = false;
    for (const p of points) {
      if (!valid(p)) { state.errors.push(`bad point ${JSON.stringify(p).slice(0, 200)}`); continue; }
      if (seen.has(p.seq)) continue;
      seen.add(p.seq);
      const kept = { seq: p.seq, t: p.t, sampler: p.sampler, total: p.total, workers: p.workers };
      // Points come in order, except a history that overlaps live samples.
      let i = state.points.length;
      while (i > 0 && state.points[i - 1].seq > p.seq) i--;
      state.points.splice(i, 0, kept);
      added = true;
    }
    while (state.points.length > KEEP_POINTS) seen.delete(state.points.shift().seq);
    if (added) draw();
  }

  function workerPids(points) {
    const pids = new Set();
    for (const p of points) for (const pid of Object.keys(p.workers)) pids.add(pid);
    return [...pids].sort((a, b) => Number(a) - Number(b));
  }

  // A round number at least v (1, 2, 2.5, 5 times a power of ten), for axis maxima.
  function niceCeil(v) {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    return [1, 2, 2.5, 5, 10].map((m) => m * p).find((n) => n >= v - 1e-9);
  }

  // [t, y] pairs, with a null where points are missing (a sampler change, a
  // restart), so that Flot breaks the line instead of bridging the gap.
  function line(points, y) {
    const data = [];
    points.forEach((p, i) => {
      if (i > 0 && p.t - points[i - 1].t > GAP_SECONDS) data.push([points[i - 1].t + 1, null]);
      data.push([p.t, y(p)]);
    });
    return data;
  }

  // One series per worker on the left axis, the machine's total on the right axis.
  function series(points, pids, value, total) {
    const out = pids.map((pid) => ({
      label: `worker ${pid}`,
      color: colorOf(pid),
      lines: { show: true, lineWidth: 1.5 },
      data: line(points, (p) => (p.workers[pid] ? value(p.workers[pid]) : null)),
    }));
    out.push({
      label: "total (machine, right axis)",
      color: TOTAL_COLOR,
      lines: { show: true, lineWidth: 2.5 },
      yaxis: 2,
      data: line(points, (p) => total(p.total)),
    });
    return out;
  }

  function chartOptions(legendId, last, left, right) {
    // Fixed ranges (autoScale "none"): Flot 4 ignores min/max when it auto-scales.
    const axis = { autoScale: "none", min: 0, labelWidth: 44 };
    return {
      series: { shadowSize: 0 },
      legend: { show: true, container: $id(legendId), noColumns: 1 },
      grid: { borderWidth: 1, borderColor: "#ccc", backgroundColor: "#fff" },
      xaxis: {
        mode: "time", timeBase: "seconds", timezone: "browser", timeformat: "%H:%M:%S",
        autoScale: "none", min: last - WINDOW_SECONDS, max: last,
      },
      yaxes: [
        { ...axis, position: "left", ...left },
        { ...axis, position: "right", gridLines: false, ...right },
      ],
    };
  }

  function draw() {
    const all = state.points;
    const last = all[all.length - 1];
    const points = all.filter((p) => p.t > last.t - WINDOW_SECONDS - 0.5);
    const pids = workerPids(points);
    const most = (value) => Math.max(0, ...points.flatMap((p) => Object.values(p.workers).map(value)));

    const ncpu = last.total.ncpu || 1;
    $id("cpu-title").textContent = `CPU (% of the machine: ${ncpu} CPU${ncpu === 1 ? "" : "s"})`;
    const percent = (v, axis) => `${v.toFixed(axis.tickDecimals || 0)}%`;
    jQuery.plot("#cpu-chart", series(points, pids, (w) => w.cpu, (t) => t.cpu), chartOptions(
      "cpu-legend", last.t,
      { max: niceCeil(Math.max(1, most((w) => w.cpu) * 1.1)), axisLabel: "worker CPU", tickFormatter: percent },
      { max: 100, axisLabel: "machine CPU", tickFormatter: percent },
    ));

    const memTotal = last.total.mem_total / GiB;
    jQuery.plot("#mem-chart", series(points, pids, (w) => w.mem / MiB, (t) => t.mem / GiB), chartOptions(
      "mem-legend", last.t,
      { max: niceCeil(most((w) => w.mem / MiB) * 1.1), axisLabel: "worker RSS (MiB)" },
      { max: memTotal, axisLabel: `machine in use (GiB of ${memTotal.toFixed(1)})`, tickDecimals: 1 },
    ));

    table(last);
    state.draws++;
    state.plotted = points.length;
    state.lastPlottedSeq = last.seq;
    info.textContent = `point ${last.seq} at ${new Date(last.t * 1000).toLocaleTimeString()} `
      + `from sampler worker ${last.sampler}; ${state.points.length} points received `
      + `(${state.received} live), ${points.length} plotted`;
  }

  function table(last) {
    const body = document.querySelector("#latest tbody");
    body.replaceChildren();
    const row = (color, name, cpu, mem, cls) => {
      const tr = document.createElement("tr");
      if (cls) tr.className = cls;
      const first = document.createElement("td");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = color;
      first.append(swatch, name);
      const c = document.createElement("td");
      c.textContent = `${cpu.toFixed(1)} %`;
      const m = document.createElement("td");
      m.textContent = mem;
      tr.append(first, c, m);
      body.appendChild(tr);
    };
    for (const pid of Object.keys(last.workers).sort((a, b) => Number(a) - Number(b))) {
      const w = last.workers[pid];
      const name = `worker ${pid}${Number(pid) === last.sampler ? " (sampler)" : ""}`;
      row(colorOf(pid), name, w.cpu, `${(w.mem / MiB).toFixed(1)} MiB RSS`);
    }
    row(TOTAL_COLOR, "total (machine)", last.total.cpu,
      `${(last.total.mem / GiB).toFixed(2)} of ${(last.total.mem_total / GiB).toFixed(1)} GiB in use`, "total");
  }

  function showStatus() {
    status.className = "";
    status.textContent = `connected to worker ${state.workerPid ?? "?"} over ${state.transport}`;
  }

  socket.on("connect", () => {
    state.connects++;
    const engine = socket.io.engine;
    state.transport = engine.transport.name;
    engine.once("upgrade", (transport) => {
      state.transport = transport.name;
      showStatus();
    });
    showStatus();
  });

  socket.on("history", (msg) => {
    state.workerPid = msg.pid;
    showStatus();
    add(Array.isArray(msg.points) ? msg.points : []);
  });

  // A live point after a hole (one the server could not broadcast, or this
  // socket missed): ask once for the kept points; add() keeps each seq once.
  let filling = false;
  socket.on("sample", (point) => {
    state.received++;
    const last = state.points.length ? state.points.at(-1).seq : null;
    add([point]);
    if (last !== null && valid(point) && point.seq > last + 1 && !filling) {
      filling = true;
      state.fills++;
      socket.timeout(10000).emit("fill", null, (err, reply) => {
        filling = false;
        if (!err && reply && Array.isArray(reply.points)) add(reply.points);
      });
    }
  });

  socket.on("disconnect", (reason) => {
    status.className = "offline";
    status.textContent = `disconnected (${reason}), reconnecting…`;
  });

  socket.on("connect_error", (err) => {
    status.className = "offline";
    status.textContent = `cannot connect: ${err.message}`;
  });
})();
