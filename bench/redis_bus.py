"""`python -m bench.redis_bus` (from the repo root): the Redis bus on one server against a 3-shard cluster.

Each row runs the same processes (bench.redis_bus_node: a worker's own
RedisBusClient under gevent): ``--senders`` publishing 100-byte frames at a
fixed rate (``--rates``: frames/s over all senders) and ``--receivers``
subscribed to the channel, for ``--duration`` seconds, on one redis-server
(PUBLISH, one PSUBSCRIBE pattern per receiver) and on a Redis Cluster of 3
masters (SPUBLISH, SSUBSCRIBE by name, the channel spread over the shards by
sender). Measured: deliveries/s (frames of the window handed to the
receivers' handlers, each once), their latency from publish() to the
handler (p50, and the worst receiver's p99), the CPU of each Redis process
(% of one core), gaps and frames lost. Rows are measured in interleaved
rounds; the table shows medians. Prints a Markdown report and writes
bench/results/redis_bus.md and redis_bus.json. Default run: about 4
minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import cpu, report
from tests.harness import REPO
from tests.redis_cluster import RedisCluster
from tests.redis_server import RedisServer

RESULTS = Path(__file__).resolve().parent / "results"
ROWS = ("one server", "cluster, 3 shards")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_bus",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=2, help="sending processes (default 2)")
    parser.add_argument("--receivers", type=int, default=4, help="receiving processes (default 4)")
    parser.add_argument("--rates", default="2000,5000,10000",
                        help="frames/s offered over all senders, comma-separated steps")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--bytes", type=int, default=100, help="payload padding per frame")
    parser.add_argument("--quiet-wait", type=float, default=5.0, help="longest wait for a quiet machine, s")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    return parser.parse_args(argv)


class Node:
    """One bench.redis_bus_node process."""

    def __init__(self, url: str, role: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.redis_bus_node", url, role], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench node {self.proc.pid} exited with {self.proc.wait(5)}")
        message: dict[str, Any] = json.loads(line)
        if "error" in message:
            raise RuntimeError(f"bench node {self.proc.pid}: {message['error']}")
        return message

    def order(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


def measure(url: str, redis_pids: list[int], rate: int, args: argparse.Namespace) -> dict[str, Any]:
    """One run on the bus at ``url`` at ``rate`` frames/s: deliveries, latency, Redis CPU, losses."""
    nodes = [Node(url, "recv") for _ in range(args.receivers)]
    nodes += [Node(url, "send") for _ in range(args.senders)]
    try:
        for node in nodes:
            node.read()  # ready: subscribed
        waited = cpu.wait_for_quiet(args.quiet_wait)
        start = time.monotonic() + 0.5
        for node in nodes:
            node.order({"start": start, "duration": args.duration, "rate": rate / args.senders,
                        "bytes": args.bytes})
        time.sleep(max(0.0, start - time.monotonic()))
        redis_before = [cpu.process_seconds([pid]) for pid in redis_pids]
        time.sleep(args.duration)
        redis_after = [cpu.process_seconds([pid]) for pid in redis_pids]
        got = [node.read() for node in nodes]
    finally:
        for node in nodes:
            node.stop()
    received = [g for g in got if g["role"] == "recv"]
    published = sum(g["published"] for g in got if g["role"] == "send")
    return {
        "offered_per_s": rate,
        "published_per_s": published / args.duration,
        "deliveries_per_s": sum(g["delivered"] for g in received) / args.duration,
        "delivered_share": sum(g["delivered"] for g in received) / max(1, published * len(received)),
        "p50_ms": statistics.median(g["p50_ms"] or 0.0 for g in received),
        "p99_ms": max(g["p99_ms"] or 0.0 for g in received),
        "redis_cpu_pct": [round(100 * (b - a) / args.duration, 1)
                          for a, b in zip(redis_before, redis_after, strict=True)],
        "gaps": sum(g["gaps"] for g in got), "frames_lost": sum(g["frames_lost"] for g in got),
        "quiet_wait_s": round(waited, 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    server = RedisServer().start()
    cluster = RedisCluster(masters=3).start()
    rates = [int(r) for r in args.rates.split(",")]
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {(row, rate): [] for row in ROWS for rate in rates}
    try:
        assert server.proc is not None
        targets = {ROWS[0]: (server.url, [server.proc.pid]),
                   ROWS[1]: (cluster.url, [n.proc.pid for n in cluster.nodes if n.proc is not None])}
        for _ in range(args.rounds):
            for rate in rates:
                for row, (url, pids) in targets.items():
                    runs[(row, rate)].append(measure(url, pids, rate, args))
        version = str(server.client.info("server")["redis_version"])
    finally:
        server.stop()
        cluster.stop()
    rows = []
    for (row, rate), measured in runs.items():
        shards = len(measured[0]["redis_cpu_pct"])
        summary: dict[str, Any] = {"bus": row, "offered_per_s": rate, "runs": measured}
        for key in ("published_per_s", "deliveries_per_s", "delivered_share", "p50_ms", "p99_ms"):
            summary[key] = statistics.median(m[key] for m in measured)
        summary["redis_cpu_pct"] = [statistics.median(m["redis_cpu_pct"][i] for m in measured)
                                    for i in range(shards)]
        summary["gaps"] = sum(m["gaps"] for m in measured)
        summary["frames_lost"] = sum(m["frames_lost"] for m in measured)
        rows.append(summary)
    return {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": {**report.machine(), "redis": version},
            "senders": args.senders, "receivers": args.receivers, "duration_s": args.duration,
            "rounds": args.rounds, "payload_bytes": args.bytes, "rows": rows}


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# The Redis bus: one redis-server against a Redis Cluster of 3 masters",
        "",
        f"`{results['command']}`, {results['date']}: {results['senders']} senders and "
        f"{results['receivers']} receivers (each a process with a worker's RedisBusClient), "
        f"{results['payload_bytes']}-byte payloads, "
        f"{results['duration_s']} s per run, median of {results['rounds']} interleaved rounds. "
        f"{m['nproc']} cores ({m['cpu_model']}), Python {m['python']}, Redis {m['redis']}.",
        "",
        "| bus | offered frames/s | deliveries/s | delivered | p50 ms | p99 ms (worst receiver) "
        "| Redis CPU, % of a core, per process | gaps | lost |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results["rows"]:
        per = " / ".join(f"{pct:.0f}" for pct in r["redis_cpu_pct"])
        lines.append(f"| {r['bus']} | {r['offered_per_s']:,} | {r['deliveries_per_s']:,.0f} "
                     f"| {100 * r['delivered_share']:.1f} % | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {per} "
                     f"(sum {sum(r['redis_cpu_pct']):.0f}) | {r['gaps']} | {r['frames_lost']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = {"command": " ".join(["python -m bench.redis_bus", *(sys.argv[1:] if argv is None else argv)]),
               **run(args)}
    report.save(args.out, "redis_bus", results, markdown(results))


if __name__ == "__main__":
    main()
