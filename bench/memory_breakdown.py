"""`python -m bench.memory_breakdown` (from the repo root): where the memory of idle WebSocket clients goes.

One barrel worker (-w 1, example_confs/barrel_conf.py, the peer benchmark's
app with BENCH_MEMORY_PROBE set, so the worker runs tracemalloc from its
start). A python-socketio client takes a baseline; ``--clients`` idle
socket.io-client WebSocket clients connect (bench/js/broadcast_load.mjs);
once the worker's RSS settled, the worker reports what grew: RSS, the bytes
Python traced (by package and by line: the innermost frame outside the
stdlib), live objects by type, and greenlets, each per client. tracemalloc
adds its own overhead to RSS (its traces), so the RSS figure here is higher
than the peer benchmark's; the traced bytes are what Python code allocated.
Writes bench/results/memory_breakdown.md and .json. About a minute.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path
from typing import Any

import socketio

from bench import report
from bench.peers import memory
from bench.peers.load import Load
from bench.peers.servers import APP, WORKER_CONNECTIONS
from tests.harness import EXAMPLE_CONF, Gunicorn

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_breakdown",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=2000, help="idle WebSocket clients (default 2000)")
    parser.add_argument("--node-procs", type=int, default=2, help="node processes of clients")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    srv = Gunicorn(app=APP, workers=1, extra_args=WORKER_CONNECTIONS, conf=EXAMPLE_CONF,
                   env={"BENCH_MANAGER": "barrel", "BENCH_MEMORY_PROBE": "1"},
                   log_path=log_dir / "barrel.log")
    srv.start()
    probe = socketio.Client()
    load = Load(srv.url, args.node_procs, log_dir)
    try:
        probe.connect(srv.url, transports=["websocket"], wait_timeout=10)
        worker = probe.call("memory_probe", "baseline", timeout=60)
        connected = load.connect(args.clients, None)
        memory.settled_rss(lambda: {"worker": worker["pid"]})
        found: dict[str, Any] = probe.call("memory_probe", "diff", timeout=120)
    finally:
        load.stop()
        probe.disconnect()
        srv.stop()
    return {"clients": connected["clients"], "worker": found}


def markdown(results: dict[str, Any]) -> str:
    n, w = results["clients"], results["worker"]

    def kb(value: float) -> str:
        return f"{value / 1024 / n:,.2f}"

    rss = (w["rss_kb"] - w["rss_kb_baseline"]) * 1024
    lines = [
        "# Where the memory of idle WebSocket clients goes (one barrel worker)",
        "",
        f"`{results['command']}`, {results['date']}: {n:,} idle socket.io-client WebSocket clients on "
        f"-w 1 (example conf), Python {w['python']}, tracemalloc on in the worker.",
        "",
        f"Per client: RSS {kb(rss)} KB (with tracemalloc's own traces), Python-traced bytes "
        f"{kb(w['traced_bytes'])} KB, greenlets {w['greenlets'] / n:.2f}.",
        "",
        "| allocated by (package) | KB per client |",
        "|---|---:|",
        *(f"| {name} | {kb(size)} |" for name, size in w["by_package"]),
        "",
        "| allocated at (innermost frame outside the stdlib) | KB per client |",
        "|---|---:|",
        *(f"| {name} | {kb(size)} |" for name, size in w["by_line"]),
        "",
        "| live objects (type) | per client |",
        "|---|---:|",
        *(f"| {name} | {count / n:.2f} |" for name, count in w["types"]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="barrel-bench-memory-") as log_dir:
        results = {"command": " ".join(["python -m bench.memory_breakdown",
                                        *(sys.argv[1:] if argv is None else argv)]),
                   "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                   **run(args, Path(log_dir))}
    report.save(args.out, "memory_breakdown", results, markdown(results))


if __name__ == "__main__":
    main()
