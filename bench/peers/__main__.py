"""`python -m bench.peers` (from the repo root): gunicorn_barrel against python-socketio and Node socket.io.

For each server, on loopback with socket.io-client v4 (node) WebSocket clients:
connects/s and RSS per idle connection (--idle-clients), then, with --clients
spread evenly over the workers, the one-way latency of 100-byte broadcasts
from one worker at a fixed --fixed-rate deliveries/s, and the highest
deliveries/s with p99 <= 50 ms and nothing lost. Then the cross-worker bus
hop at --hop-rate frames/s (barrel bus and Redis pub/sub). Writes
bench/results/peers.json and peers.md. Default run: about 7 minutes; --quick: about 2.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import cpu
from bench import report as machine_report
from bench.peers import broadcast, bus_hop, memory, report
from bench.peers.load import Load, LoadError
from bench.peers.servers import Server, start_gunicorn, start_node, stop_quietly
from tests.test_store_redis import RedisServer

FD_MARGIN = 1000
RESULTS = Path(__file__).resolve().parent.parent / "results"
SERVERS = {
    "barrel-1": ("gunicorn_barrel -w 1", "barrel", 1, "none (1 worker)"),
    "barrel-2": ("gunicorn_barrel -w 2", "barrel", 2, "barrel bus (broadcaster side process)"),
    "gevent-1": ("python-socketio, gunicorn -k gevent -w 1", "plain", 1, "none (1 worker)"),
    "redis-2": ("python-socketio + RedisManager, -k gevent -w 2", "redis", 2, "Redis pub/sub"),
    "node-1": ("Node socket.io, 1 process", "node", 1, "none (1 process)"),
    "node-2": ("Node socket.io cluster, 2 processes", "node", 2,
               "@socket.io/cluster-adapter (IPC via the primary)"),
}
DEFAULTS = {"idle_clients": 5000, "clients": 1000, "fixed_seconds": 5.0, "step_seconds": 3.0, "max_steps": 8,
            "hop_seconds": 5.0, "quiet_wait": 10.0}
QUICK = {"idle_clients": 1000, "clients": 1000, "fixed_seconds": 2.0, "step_seconds": 2.0, "max_steps": 3,
         "hop_seconds": 2.0, "quiet_wait": 2.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    summary = (__doc__ or "").split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=summary)
    parser.add_argument("--quick", action="store_true", help="a smoke run of about 2 minutes")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated subset of {', '.join(SERVERS)} (default: all)")
    parser.add_argument("--idle-clients", type=int, help="clients for connects/s and idle RSS (default 5000)")
    parser.add_argument("--clients", type=int, help="clients receiving the broadcasts (default 1000)")
    parser.add_argument("--fixed-rate", type=float, default=20000, help="deliveries/s of the latency figure")
    parser.add_argument("--fixed-seconds", type=float, help="length of the fixed-rate step, s (default 5)")
    parser.add_argument("--step-seconds", type=float, help="length of each search step, s (default 3)")
    parser.add_argument("--max-steps", type=int,
                        help="steps of the rate search, the fixed one included (default 8)")
    parser.add_argument("--load-procs", type=int, default=2, help="node load generator processes")
    parser.add_argument("--hop-rate", type=float, default=10000, help="bus hop frames/s")
    parser.add_argument("--hop-seconds", type=float, help="bus hop run per transport, s (default 5)")
    parser.add_argument("--no-hop", action="store_true", help="skip the bus hop figure")
    parser.add_argument("--quiet-wait", type=float,
                        help="longest wait for a quiet machine before each server, s (default 10; quick 2)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--log-dir", type=Path,
                        help="servers' and load generators' logs (default: a new barrel-bench-peers-* "
                             "directory in the system temporary directory)")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        parser.error(f"unknown servers {sorted(unknown)}; known: {', '.join(SERVERS)}")
    return args


def start(key: str, log_dir: Path, redis: RedisServer | None) -> Server:
    name, kind, processes, bus = SERVERS[key]
    server = Server(name=name, kind=kind, processes=processes, bus=bus)
    print(f"== {name}", flush=True)
    try:
        if kind == "node":
            return start_node(server, log_dir)
        redis_pid = redis.proc.pid if redis and redis.proc and kind == "redis" else None
        return start_gunicorn(server, log_dir, redis.url if redis else None, redis_pid)
    except BaseException:
        stop_quietly(server)
        raise


def measure_idle(server: Server, load: Load, clients: int) -> dict[str, Any]:
    """Connects/s and RSS with ``clients`` idle clients (and before them)."""
    rss_before = memory.rss(server.pids())
    idle = load.connect(clients, None)
    rss_idle = memory.settled_rss(server.pids)
    print(f"  {idle['clients']} idle clients in {idle['seconds']:.1f} s ({idle['handshakes_per_s']:,.0f}"
          f" handshakes/s), by worker {idle['by_worker']}, RSS {sum(rss_idle.values()) / 1024:,.0f} MB",
          flush=True)
    return {**idle, "rss_kb_before": rss_before, "rss_kb": rss_idle}


def run_server(key: str, args: argparse.Namespace, log_dir: Path,
               redis: RedisServer | None) -> dict[str, Any]:
    server = start(key, log_dir, redis)
    load: Load | None = None
    try:
        (log_dir / key).mkdir(exist_ok=True)
        load = Load(server.url, args.load_procs, log_dir / key)
        idle = measure_idle(server, load, args.idle_clients)
        spread = load.spread(args.clients, server.worker_pids)
        print(f"  {args.clients} clients by worker {spread['by_worker']}; "
              f"deflate {spread['extensions']}", flush=True)
        origin = server.worker_pids[0]  # every broadcast comes from this worker

        def step(rate: float, seconds: float = args.step_seconds) -> dict[str, Any]:
            return broadcast.measured_step(load, origin, rate, seconds, server.pids)  # type: ignore[arg-type]

        fixed = step(args.fixed_rate / args.clients, args.fixed_seconds)
        found = broadcast.search(step, fixed, args.max_steps)
    finally:
        if load is not None:
            load.stop()
        stop_quietly(server)
    return {"name": server.name, "kind": server.kind, "processes": server.processes, "bus": server.bus,
            "origin_worker": origin, "idle": idle, "spread": spread, "fixed": fixed, "search": found}


def run_server_or_error(key: str, args: argparse.Namespace, log_dir: Path,
                        redis: RedisServer | None) -> dict[str, Any]:
    """run_server, or what went wrong (the other servers still run)."""
    try:
        return run_server(key, args, log_dir, redis)
    except (LoadError, AssertionError, RuntimeError) as exc:
        print(f"  {key} failed: {exc}", flush=True)
        name, kind, processes, bus = SERVERS[key]
        return {"name": name, "kind": kind, "processes": processes, "bus": bus, "error": str(exc)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < args.idle_clients + FD_MARGIN:  # a 1-worker server holds every client's socket
        sys.exit(f"the open files hard limit ({hard}) is below --idle-clients + {FD_MARGIN}: raise it "
                 "(ulimit -Hn, as root) or pass fewer --idle-clients")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the servers and node
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="barrel-bench-peers-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"logs in {log_dir}", file=sys.stderr)
    redis = RedisServer().start() if "redis-2" in args.servers or not args.no_hop else None
    loadavg = {"start": os.getloadavg()}
    try:
        waited, servers = 0.0, {}
        for key in args.servers:  # each server starts on a machine as quiet as it gets within --quiet-wait
            waited += cpu.wait_for_quiet(args.quiet_wait)
            servers[key] = run_server_or_error(key, args, log_dir, redis)
        failed = [key for key, server in servers.items() if "error" in server]
        waited += 0.0 if args.no_hop else cpu.wait_for_quiet(args.quiet_wait)
        hop = None if args.no_hop else bus_hop.measure(args.hop_rate, args.hop_seconds, redis, log_dir)
    finally:
        if redis is not None:
            redis.stop()
    loadavg["end"] = os.getloadavg()
    results = {
        "date": date, "loadavg": loadavg, "elapsed_s": time.monotonic() - started,
        "waited_for_quiet_s": waited,
        "machine": {**machine_report.machine(), **report.node_versions()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "nofile_limit": hard, "log_dir": str(log_dir), "servers": servers, "bus_hop": hop,
    }
    text = report.markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "peers.md").write_text(text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
