"""Soak test: thousands of churning socket.io-client v4 clients on gunicorn -w 4, for half an hour.

    python -m bench.soak [--minutes 30] [--clients 2000] [--workers 4] [--rate 10]

Not run by CI. Starts gunicorn (tests.apps.sio_app:wsgi, barrel config) on a free
loopback port, then bench/js/soak_clients.mjs, which keeps ~--clients clients
connected (20% polling-only), churns 1% of them a second and broadcasts --rate
numbered messages a second; its 50 stable clients must get every one exactly once.
Records the RSS of every process after all clients connected and at the end, and
the bus counters of each worker; writes bench/results/soak.json and soak.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import sys
import time
from pathlib import Path
from typing import Any

from tests.harness import REPO, Gunicorn, spread_clients
from tests.json_lines import JsonLinesProcess
from tests.node_clients import NODE, all_workers_serving

SCRIPT = REPO / "bench" / "js" / "soak_clients.mjs"
RESULTS = REPO / "bench" / "results"
DRAIN_SECONDS = 10
READY_TIMEOUT = 330.0
STATUS_TIMEOUT = 30.0
COUNTERS = ("gaps", "frames_lost", "duplicates_dropped", "clients_dropped_slow", "packets_dropped_slow")
# engineio logs its request errors once per process at ERROR level, without gunicorn's prefix.
LOG_PROBLEM = re.compile(r"\[(ERROR|CRITICAL)\]|Traceback|WORKER TIMEOUT|bus gap|further occurrences of this")


class SoakNode(JsonLinesProcess):
    """bench/js/soak_clients.mjs as a subprocess: commands to its stdin, JSON lines from its stdout."""

    def __init__(self, url: str, clients: int, rate: float, stderr_path: Path) -> None:
        assert NODE is not None, "needs `node` on PATH"
        super().__init__([NODE, str(SCRIPT), url, str(clients), str(rate), str(DRAIN_SECONDS)],
                         stderr_path, exit_wait=10.0)

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next message (None if none within ``timeout``); raises if node exited or failed."""
        try:
            message = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if message is None or message.get("type") in ("error", "unparsable"):
            stderr = self.stderr_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"node failed (exit {self.proc.poll()}): {message}\n{stderr}")
        return message

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.next(left)
            if message is not None and message["type"] == kind:
                return message
        raise RuntimeError(f"no {kind!r} line from node within {timeout} s")


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def processes(srv: Gunicorn, node: SoakNode) -> dict[str, int]:
    named = {"arbiter": srv.pid, "broadcaster": srv.broadcaster_pid()}
    if hasattr(srv, "store_pids"):  # the embedded store side process, in versions that have one
        named.update({f"store {pid}": pid for pid in srv.store_pids()})
    named.update({f"worker {pid}": pid for pid in sorted(srv.worker_pids())})
    named["node clients"] = node.proc.pid
    return named


def rss_snapshot(srv: Gunicorn, node: SoakNode) -> dict[str, float | None]:
    return {name: rss_mb(pid) for name, pid in processes(srv, node).items()}


def worker_counters(srv: Gunicorn) -> dict[int, dict[str, int]]:
    """bus_counters from each worker, through one python-socketio client held by each."""
    clients = spread_clients(srv.url, srv.workers, per_worker=1)
    try:
        found: dict[int, dict[str, int]] = {}
        for client in clients:
            if client.pid not in found:
                answer = client.call("bus_counters")
                found[answer["pid"]] = answer["counters"]
        return found
    finally:
        for client in clients:
            client.close()


def log_problems(srv: Gunicorn) -> list[str]:
    return [line for line in srv.log().splitlines() if LOG_PROBLEM.search(line)]


def progress(status: dict[str, Any]) -> str:
    s = status["stable"]
    return (
        f"[{status['type']} {status['elapsed_s']:6.0f} s] connected {status['connected']}/{status['target']}"
        f" {status['transports']}, connects ok {status['connects_ok']} failed {status['connects_failed']},"
        f" disconnects {status['disconnects']}, drops {status['drops'] or 0}, broadcasts"
        f" {status['broadcasts_sent']}, news {status['news_received']}; stable: missing {s['missing']}"
        f" duplicates {s['duplicates']} of {s['expected']}, latency ms {s['latency_ms']}"
    )


def soak(minutes: float, clients: int, workers: int, rate: float) -> dict[str, Any]:
    srv = Gunicorn(workers=workers, extra_args=("--worker-connections", "4000"))
    node: SoakNode | None = None
    began = time.monotonic()
    try:
        srv.start()
        all_workers_serving(srv)
        node = SoakNode(srv.url, clients, rate, Path(f"/tmp/barrel-soak-node-{srv.port}.log"))
        ready = node.expect("ready", READY_TIMEOUT)
        print(f"ready: {ready['connected']} clients in {ready['seconds']:.1f} s,"
              f" stable clients per worker {ready['stable_pids']}", flush=True)
        rss_start = rss_snapshot(srv, node)
        statuses: list[dict[str, Any]] = []
        deadline = time.monotonic() + minutes * 60
        while (left := deadline - time.monotonic()) > 0:
            status = node.next(min(left, STATUS_TIMEOUT))
            if status is None and time.monotonic() < deadline:
                raise RuntimeError(f"no status line from node within {STATUS_TIMEOUT} s")
            if status is not None:
                statuses.append(status)
                print(progress(status), flush=True)
        node.send({"cmd": "stop"})
        final = node.expect("final", DRAIN_SECONDS + STATUS_TIMEOUT)
        print(progress(final), flush=True)
        rss_end = rss_snapshot(srv, node)
        counters = worker_counters(srv)
    except Exception:
        print(f"soak failed; gunicorn log: {srv.log_path}, node stderr: /tmp/barrel-soak-node-{srv.port}.log",
              file=sys.stderr)
        raise
    finally:
        if node is not None:
            node.stop()
        srv.stop()
    return {
        "args": {"minutes": minutes, "clients": clients, "workers": workers, "rate": rate},
        "machine": {
            "nproc": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
        },
        "wall_seconds": time.monotonic() - began,
        "ready": ready, "statuses": statuses, "final": final,
        "rss_mb": {"start": rss_start, "end": rss_end},
        "worker_counters": {str(pid): c for pid, c in counters.items()},
        "log_problems": log_problems(srv), "gunicorn_log": str(srv.log_path),
    }


def _mb(value: float | None) -> str:
    return "gone" if value is None else f"{value:,.1f}"


def markdown(result: dict[str, Any]) -> str:
    start, end = result["rss_mb"]["start"], result["rss_mb"]["end"]
    lines = ["| process | RSS start MB | RSS end MB | delta MB |", "| --- | ---: | ---: | ---: |"]
    for name in {**start, **end}:
        a, b = start.get(name), end.get(name)
        delta = f"{b - a:+,.1f}" if a is not None and b is not None else "n/a"
        lines.append(f"| {name} | {_mb(a)} | {_mb(b)} | {delta} |")
    final, stable, args = result["final"], result["final"]["stable"], result["args"]
    news = final["news_received"]
    errors = f" {final['connect_errors']}" if final["connect_errors"] else ""
    lines += [
        "",
        f"- duration: {final['elapsed_s'] / 60:.1f} min of churn and broadcasts"
        f" (+ {DRAIN_SECONDS} s drain; wall {result['wall_seconds']:.0f} s),"
        f" gunicorn -w {args['workers']}, {result['machine']['nproc']} CPUs",
        f"- clients: target {final['target']}, connected at the end {final['connected']}"
        f" {final['transports']}; all {result['ready']['connected']} connected in"
        f" {result['ready']['seconds']:.1f} s",
        f"- connects ok {final['connects_ok']}, failed {final['connects_failed']}"
        f"{errors}; disconnects (churn) {final['disconnects']},"
        f" unexpected drops {final['drops'] or 0}",
        f"- broadcasts: {final['broadcasts_sent']} sent at {args['rate']}/s,"
        f" acked {final['broadcasts_acked']}, failed {final['broadcasts_failed']}; news received {news:,}"
        f" ({news / final['elapsed_s']:,.0f} deliveries/s)",
        f"- stable clients ({stable['clients']}, {stable['connected']} connected, {stable['reconnects']}"
        f" reconnects): expected {stable['expected']:,}, received {stable['received']:,},"
        f" **missing {stable['missing']}, duplicates {stable['duplicates']}**;"
        f" latency of the last window ms {stable['latency_ms']}",
        f"- gunicorn log ({result['gunicorn_log']}): {len(result['log_problems'])} problem lines"
        + "".join(f"\n    - `{line}`" for line in result["log_problems"][:10]),
        "",
        "| worker counters | " + " | ".join(COUNTERS) + " |",
        "| --- |" + " ---: |" * len(COUNTERS),
    ]
    for pid, c in sorted(result["worker_counters"].items()):
        lines.append(f"| worker {pid} | " + " | ".join(str(c.get(k, 0)) for k in COUNTERS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=10, help="broadcasts per second, in total")
    args = parser.parse_args(argv)
    result = soak(args.minutes, args.clients, args.workers, args.rate)
    text = markdown(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    command = " ".join(["python -m bench.soak", *(sys.argv[1:] if argv is None else argv)])
    (RESULTS / "soak.md").write_text(f"# Soak: `{command}`\n\n{text}")
    print(text)
    stable = result["final"]["stable"]
    return 0 if stable["missing"] == stable["duplicates"] == result["final"]["connects_failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
