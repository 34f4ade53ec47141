"""The peer benchmark's Markdown tables, from the results dict of bench/peers/__main__.py."""
from __future__ import annotations

import json
import math
import subprocess
from typing import Any

from bench.peers.broadcast import KEPT_RATE, P99_LIMIT_MS
from tests.harness import REPO
from tests.node_clients import NODE

NODE_PACKAGES = ("socket.io", "socket.io-client", "@socket.io/cluster-adapter", "@socket.io/sticky")


def node_versions() -> dict[str, str]:
    version = subprocess.run([NODE or "node", "--version"], capture_output=True, text=True)
    found = {"node": version.stdout.strip()}
    for pkg in NODE_PACKAGES:
        manifest = REPO / "node_modules" / pkg / "package.json"
        found[pkg] = json.loads(manifest.read_text())["version"] if manifest.exists() else "missing"
    return found


def _f(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "n/a (a server passed no step)"


def best_rate(server: dict[str, Any]) -> float | None:
    best = server["search"]["best"]
    return best["deliveries_per_s"] if best else None


def broadcast_table(servers: dict[str, Any], clients: int) -> list[str]:
    lines = [f"| server | bus between workers | deliveries/s at p99 <= {P99_LIMIT_MS:.0f} ms "
             "| p50 ms | p99 ms | lowest failing | steps | CPU % server / load / other |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for s in servers.values():
        best, search = s["search"]["best"], s["search"]
        fail = search["first_fail_rate"]
        lat = best["latency_ms"] if best else {"p50": None, "p99": None}
        cpu = " / ".join(_f(best["cpu_pct"][k]) for k in ("server", "load", "other")) if best else "n/a"
        rate = f"**{_f(best_rate(s))}**" if best else f"below {_f(fail and fail * clients)}"
        lines.append(
            f"| {s['name']} | {s['bus']} | {rate} | {_f(lat['p50'], 1)} "
            f"| {_f(lat['p99'], 1)} "
            f"| {_f(fail and fail * clients)} | {len(search['steps'])} | {cpu} |")
    return lines


def latency_table(servers: dict[str, Any]) -> list[str]:
    lines = ["| server | p50 ms | p99 ms | max ms | delivered/s | missing | CPU % server / load / other |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for s in servers.values():
        f, cpu = s["fixed"], s["fixed"]["cpu_pct"]
        lat = f["latency_ms"]
        lines.append(f"| {s['name']} | {_f(lat['p50'], 1)} | {_f(lat['p99'], 1)} | {_f(lat['max'], 1)} "
                     f"| {_f(f['deliveries_per_s'])} | {f['missing']} "
                     f"| {' / '.join(_f(cpu[k]) for k in ('server', 'load', 'other'))} |")
    return lines


def idle_table(servers: dict[str, Any]) -> list[str]:
    lines = ["| server | idle clients | by worker | RSS before MB | RSS with clients MB | KB per client "
             "| delta KB per client | connects/s | failed connects | permessage-deflate |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for s in servers.values():
        idle = s["idle"]
        before, after, n = sum(idle["rss_kb_before"].values()), sum(idle["rss_kb"].values()), idle["clients"]
        spread = ", ".join(str(v) for v in idle["by_worker"].values())
        deflate = ", ".join(f"{k}: {v}" for k, v in idle["extensions"].items())
        lines.append(f"| {s['name']} | {n:,} | {spread} | {_f(before / 1024, 1)} | {_f(after / 1024, 1)} "
                     f"| **{_f(after / n, 1)}** | {_f((after - before) / n, 1)} "
                     f"| {_f(idle['handshakes_per_s'])} | {idle['failed']} | {deflate} |")
    return lines


def hop_table(hop: dict[str, Any]) -> list[str]:
    lines = ["| transport | frames sent | received | p50 µs | p99 µs | max µs | CPU % server / other |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for backend, label in (("barrel", "gunicorn_barrel bus (PUSH -> broadcaster -> PUB/SUB)"),
                           ("redis", "Redis pub/sub (redis-py, one pipeline per tick)")):
        h = hop.get(backend)
        if h:
            lat, cpu = h["latency_us"], h["cpu_pct"]
            lines.append(f"| {label} | {h['sent']:,} | {h['received']:,} | {_f(lat['p50'])} "
                         f"| **{_f(lat['p99'])}** | {_f(h['max_us'])} "
                         f"| {_f(cpu['server'])} / {_f(cpu['other'])} |")
    return lines


def measured(servers: dict[str, Any]) -> dict[str, Any]:
    """The servers whose run completed."""
    return {key: s for key, s in servers.items() if "error" not in s}


def goals(results: dict[str, Any]) -> list[str]:
    servers, hop = measured(results["servers"]), results["bus_hop"]
    rate = {k: best_rate(s) for k, s in servers.items()}
    lines = []
    if "barrel-2" in servers:
        lines.append(f"- deliveries/s, gunicorn_barrel -w 2 / Node cluster 2 processes: "
                     f"**{_ratio(rate['barrel-2'], rate.get('node-2'))}** (goal >= 1.0x)")
        lines.append(f"- deliveries/s, gunicorn_barrel -w 2 / python-socketio + RedisManager -w 2: "
                     f"**{_ratio(rate['barrel-2'], rate.get('redis-2'))}** (goal >= 2x)")
        idle = servers["barrel-2"]["idle"]
        total, before = sum(idle["rss_kb"].values()), sum(idle["rss_kb_before"].values())
        lines.append(f"- RSS per idle WebSocket connection, gunicorn_barrel -w 2: "
                     f"**{_f(total / idle['clients'], 1)} KB** (goal <= 24 KB; "
                     f"{_f((total - before) / idle['clients'], 1)} KB over the processes' RSS "
                     "before the clients)")
    if hop and "barrel" in hop:
        lines.append(f"- bus hop p99 at {hop['rate']:,.0f} frames/s: "
                     f"**{_f(hop['barrel']['latency_us']['p99'])} µs** (goal <= 1,000 µs)")
    return lines


def conditions(results: dict[str, Any]) -> list[str]:
    m, a = results["machine"], results["args"]
    quick = " (--quick)" if a["quick"] else ""
    return [
        f"- Date: {results['date']}; whole run {results['elapsed_s']:.0f} s{quick}; "
        f"waited {results['waited_for_quiet_s']:.0f} s in all for a quiet machine (up to "
        f"{a['quiet_wait']:.0f} s before each server); load average "
        f"{results['loadavg']['start'][0]:.1f} at the start, {results['loadavg']['end'][0]:.1f} at the end.",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}; Python {m['python']}, "
        f"gunicorn {m['gunicorn']}, gevent {m['gevent']}, python-engineio {m['python-engineio']}, "
        f"python-socketio {m['python-socketio']}; node {m['node']}, socket.io {m['socket.io']}, "
        f"socket.io-client {m['socket.io-client']}, "
        f"@socket.io/cluster-adapter {m['@socket.io/cluster-adapter']}, "
        f"@socket.io/sticky {m['@socket.io/sticky']}.",
        f"- Loopback only. **Servers and load generator share the {m['nproc']} cores.** Load generator: "
        f"{a['load_procs']} node processes of socket.io-client v4 (default options, so each client "
        "offers permessage-deflate as browsers do; WebSocket transport only). CPU %: 100 = one core "
        "from the start of a step to the last delivery; server = all its processes (/proc), load = the "
        "node clients, other = the rest of the machine (other agents' work when the machine is shared); "
        "steal (time the hypervisor gave elsewhere) is in the JSON.",
        "- Broadcasts: 100 bytes of JSON data ({t, tag, pad}), all sent by **one** worker (the first), "
        "so with 2 workers the other worker's clients receive through the bus (barrel), Redis or the "
        f"cluster adapter; {a['clients']:,} clients spread exactly evenly over the workers (checked "
        "with each client's worker pid). Latency: one-way, send time stamped by the server (wall "
        "clock), read by the client on arrival (same host), in 0.1 ms buckets.",
        f"- Rate search: steps of {a['step_seconds']} s, doubling (or halving) from the fixed-rate "
        "step until a pass and a failure bracket the limit, then bisecting (geometric mean) to within "
        f"15 %, at most {a['max_steps']} steps. A step passes when every client got every broadcast, "
        f"p99 <= {P99_LIMIT_MS:.0f} ms and the server sent them within {100 * (KEPT_RATE - 1):.0f} % "
        "of the step's time. Each step starts once the server's processes are idle.",
        f"- Fixed-rate latency: {a['fixed_rate']:,.0f} deliveries/s "
        f"({a['fixed_rate'] / a['clients']:g} broadcasts/s x {a['clients']:,} clients) for "
        f"{a['fixed_seconds']} s; it is also the rate search's first step.",
        f"- Idle: {a['idle_clients']:,} clients connected ({50 * a['load_procs']} handshakes in "
        "flight), where the server puts them; connects/s = completed socket.io handshakes (up to "
        "the server's \"hi\" event) / time. RSS = sum over all the server's processes (gunicorn "
        "arbiter, workers, barrel side processes; the redis-server for the RedisManager row; node "
        "primary and workers), once it settles; delta = minus the same processes before the clients.",
        "- Servers: gunicorn_barrel runs bench/peers/app.py with BarrelManager and "
        "example_confs/barrel_conf.py (websocket_deflate off, the embedded store side process on, as "
        "configured there); python-socketio rows run the same app with the default manager or "
        "RedisManager under `-k gevent` (bench/plain_conf.py); Node rows run "
        "bench/js/node_server.mjs (default socket.io options) and, for 2 processes, node's cluster "
        "module with @socket.io/sticky (least connections) and @socket.io/cluster-adapter. "
        "gunicorn --worker-connections 20000.",
        f"- Logs: {results['log_dir']}.",
    ]


def markdown(results: dict[str, Any]) -> str:
    servers, clients = measured(results["servers"]), results["args"]["clients"]
    failed = {key: s for key, s in results["servers"].items() if key not in servers}
    lines = ["# Broadcast benchmark against the peers", "", "## Goals (ratios within this run)", ""]
    lines += goals(results)
    for s in failed.values():
        lines.append(f"- **{s['name']} did not complete**: {s['error'].splitlines()[0][:300]}")
    lines += ["", f"## Deliveries/s of 100-byte broadcasts to {clients:,} WebSocket clients "
              "(all sent by one worker)", ""]
    lines += broadcast_table(servers, clients)
    lines += ["", f"## One-way latency at {results['args']['fixed_rate']:,.0f} deliveries/s "
              "(all sent by one worker)", ""]
    lines += latency_table(servers)
    lines += ["", "## Idle WebSocket connections: RSS and connects/s", ""]
    lines += idle_table(servers)
    if results["bus_hop"]:
        hop = results["bus_hop"]
        lines += ["", f"## Cross-worker bus hop at {hop['rate']:,.0f} frames/s (gunicorn_barrel -w 2, "
                  f"{hop['seconds']} s per transport)", ""]
        lines += hop_table(hop)
    lines += ["", "## Conditions", ""]
    lines += conditions(results)
    return "\n".join(lines) + "\n"
