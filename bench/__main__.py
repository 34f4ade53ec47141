"""`python -m bench` (from the repo root): the polling benchmark, loopback only.

Measures, in one run, the round trip of a handed-off polling request vs a
local one (BarrelWorker -w 2), then polling-only socket.io sessions per second
on BarrelWorker -w 1, -w 2 and a plain gevent worker. Prints a Markdown report
and writes bench/results/polling.json and bench/results/polling.md.
Default run: about 2.5 minutes on 2 cores, under 4 with its bounded waits
for a quiet machine and reruns of contended runs (--budget); --quick: about 30 s.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import CONNECTION_MODES, cpu, polling_latency, polling_throughput, report
from tests.harness import Gunicorn, children_of

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULTS = {"samples": 2000, "latency_budget": 40.0, "rounds": 3, "warmup": 2.0, "duration": 10.0,
            "retries": 3, "budget": 210.0, "quiet_wait": 10.0}
QUICK = {"samples": 300, "latency_budget": 8.0, "rounds": 1, "warmup": 1.0, "duration": 5.0, "retries": 0,
         "budget": 40.0, "quiet_wait": 2.0}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~30 s run (fewer samples, 1 round)")
    parser.add_argument("--samples", type=int, help="latency samples (default 2000; quick 300)")
    parser.add_argument("--latency-budget", type=float, help="latency phase time limit, s")
    parser.add_argument("--rounds", type=int, help="interleaved throughput rounds (default 3)")
    parser.add_argument("--warmup", type=float, help="throughput warm-up per run, s")
    parser.add_argument("--duration", type=float, help="throughput measured time per run, s")
    parser.add_argument("--retries", type=int,
                        help="reruns allowed, in all, for runs another process competed with (default 3)")
    parser.add_argument("--budget", type=float,
                        help="whole run, s: no quiet-wait or rerun past it (default 210; quick 40)")
    parser.add_argument("--quiet-wait", type=float,
                        help="longest wait for a quiet machine before each phase or run, s (default 10)")
    parser.add_argument("--concurrency", type=int, default=50, help="load generator greenlets")
    parser.add_argument("--connection", choices=CONNECTION_MODES, default="keepalive",
                        help="load generator connections: one per client loop (default), "
                             "per session, or per request")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def run_latency(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    srv = Gunicorn(app="tests.apps.sio_app:wsgi", workers=2, log_path=log_dir / "latency.log")
    waited = cpu.wait_for_quiet(args.quiet_wait)
    try:
        srv.start()
        server_pids = [srv.pid, *children_of(srv.pid)]
        before = cpu.process_seconds([*server_pids, os.getpid()]), cpu.machine_seconds()[0]
        result = polling_latency.measure(srv, args.samples, args.latency_budget, warmup=args.samples // 20)
        after = cpu.process_seconds([*server_pids, os.getpid()]), cpu.machine_seconds()[0]
    finally:
        srv.stop()
    ours, machine = after[0] - before[0], after[1] - before[1]
    result["waited_for_quiet_s"] = waited
    result["other_cpu_pct"] = 100 * (machine - ours) / result["elapsed_s"]
    result["log_path"] = str(srv.log_path)
    result["log_issues"] = polling_throughput.log_issues(srv.log_path)
    print(f"latency: {result['rows_us']['local']['n']} local, {result['rows_us']['handed_off']['n']} "
          f"handed off, {result['errors']} errors", file=sys.stderr)
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.monotonic()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    log_dir = Path(tempfile.mkdtemp(prefix="barrel-bench-"))
    print(f"gunicorn logs in {log_dir}", file=sys.stderr)
    latency = run_latency(args, log_dir)
    throughput = polling_throughput.measure(args.rounds, args.concurrency, args.warmup, args.duration,
                                            args.connection, log_dir, args.retries, started + args.budget,
                                            args.quiet_wait)
    results = {
        "date": date,
        "elapsed_s": time.monotonic() - started,
        "machine": report.machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "log_dir": str(log_dir),
        "latency": latency,
        "throughput": throughput,
    }
    text = report.markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "polling.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "polling.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
