"""Polling-only socket.io clients served per second, per server configuration.

Each run starts its own gunicorn (tests.harness.Gunicorn, loopback, stopped by
pid), drives it with `python -m bench.polling_load` in a separate process,
and reads the server's CPU time (arbiter and its children: workers, sidecars)
from /proc. Configurations are run in interleaved rounds; the summary of a
configuration is the median of its runs, metric by metric.
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cpu
from tests.harness import EXAMPLE_CONF, REPO, Gunicorn, children_of

BENCH = Path(__file__).resolve().parent
LOG_MARKERS = ("ERROR", "Traceback", "WARNING", "CRITICAL", "Invalid session")
MAX_LOG_LINES = 20
# "other CPU" (the machine's busy time less server and load generator) above
# this share of one core means another process competed with the run.
CONTENDED_PCT = 25.0
RUN_OVERHEAD_S = 5.0  # gunicorn start and stop, load generator start


@dataclass(frozen=True)
class ServerConfig:
    name: str
    app: str
    workers: int
    conf: Path


CONFIGS = (
    ServerConfig("BarrelWorker -w 1", "tests.apps.sio_app:wsgi", 1, EXAMPLE_CONF),
    ServerConfig("BarrelWorker -w 2", "tests.apps.sio_app:wsgi", 2, EXAMPLE_CONF),
    ServerConfig("gevent -w 1, plain python-socketio", "bench.plain_sio_app:wsgi", 1,
                 BENCH / "plain_conf.py"),
)


def log_issues(path: Path) -> list[str]:
    lines = path.read_text(errors="replace").splitlines()
    return [line for line in lines if any(m in line for m in LOG_MARKERS)][:MAX_LOG_LINES]


def run_once(config: ServerConfig, load_args: list[str], timeout: float, log_dir: Path,
             tag: str) -> dict[str, Any]:
    """Start the server, run the load generator against it, stop the server."""
    srv = Gunicorn(app=config.app, workers=config.workers, conf=config.conf,
                   log_path=log_dir / f"{tag}.log")
    try:
        srv.start()
        workers_before = sorted(srv.worker_pids())
        server_pids = [srv.pid, *children_of(srv.pid)]
        cpu0 = cpu.process_seconds(server_pids)
        busy0, steal0 = cpu.machine_seconds()
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "bench.polling_load", "--port", str(srv.port), *load_args],
            cwd=REPO, capture_output=True, text=True, timeout=timeout,
        )
        wall = time.monotonic() - t0
        server_cpu = cpu.process_seconds(server_pids) - cpu0
        busy1, steal1 = cpu.machine_seconds()
        same_workers = sorted(srv.worker_pids()) == workers_before
    finally:
        srv.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode}): {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    server_pct, loadgen_pct = 100 * server_cpu / wall, 100 * result["cpu_s"] / wall
    machine_pct = 100 * (busy1 - busy0) / wall
    result.update(
        server_cpu_s=server_cpu,
        server_cpu_pct=server_pct,
        loadgen_cpu_pct=loadgen_pct,
        # CPU the machine spent on anything else meanwhile (other processes, kernel)
        machine_busy_pct=machine_pct,
        other_cpu_pct=machine_pct - server_pct - loadgen_pct,
        steal_pct=100 * (steal1 - steal0) / wall,
        same_workers_throughout=same_workers,
        log_path=str(srv.log_path),
        log_issues=log_issues(srv.log_path),
    )
    return result


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each metric over the runs of one configuration; errors summed."""

    def median(get: Any) -> float:
        return float(statistics.median(get(r) for r in runs))

    return {
        "runs": len(runs),
        "sessions_per_s": median(lambda r: r["sessions_per_s"]),
        "sessions_per_s_each_run": [round(r["sessions_per_s"], 1) for r in runs],
        "contended_each_run": [r["contended"] for r in runs],
        "latency_p50_ms": median(lambda r: r["latency_ms"]["p50"]),
        "latency_p99_ms": median(lambda r: r["latency_ms"]["p99"]),
        "requests_timed": sum(r["latency_ms"]["n"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
        "log_issue_lines": sum(len(r["log_issues"]) for r in runs),
        "server_cpu_pct": median(lambda r: r["server_cpu_pct"]),
        "loadgen_cpu_pct": median(lambda r: r["loadgen_cpu_pct"]),
        "other_cpu_pct_max": max(r["other_cpu_pct"] for r in runs),
        "contended_runs_kept": sum(r["contended"] for r in runs),
    }


def measure(rounds: int, concurrency: int, warmup: float, duration: float, connection: str,
            log_dir: Path, retries: int, deadline: float, quiet_wait: float) -> dict[str, Any]:
    """Run every configuration ``rounds`` times, interleaved (A B C, A B C, ...).

    Each run first waits (``quiet_wait`` s at most) for a quiet machine. A run
    during which something else took more than CONTENDED_PCT of a core is set
    aside and run again while ``retries`` (over the whole measurement) and time
    before ``deadline`` (time.monotonic) remain; a contended run kept stays flagged.
    """
    load_args = ["--concurrency", str(concurrency), "--warmup", str(warmup),
                 "--duration", str(duration), "--connection", connection]
    timeout = warmup + duration + 90
    run_cost = warmup + duration + RUN_OVERHEAD_S  # start, load, stop
    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in CONFIGS}
    discarded: list[dict[str, Any]] = []
    waited = 0.0
    left = rounds * len(CONFIGS)
    for round_no in range(rounds):
        for i, config in enumerate(CONFIGS):
            left -= 1
            while True:
                spare = deadline - time.monotonic() - (left + 1) * run_cost
                waited += cpu.wait_for_quiet(min(quiet_wait, max(0.0, spare)))
                result = run_once(config, load_args, timeout, log_dir, f"r{round_no}-c{i}-{len(discarded)}")
                result["contended"] = result["other_cpu_pct"] > CONTENDED_PCT
                print(f"throughput round {round_no + 1}/{rounds} {config.name}: "
                      f"{result['sessions_per_s']:.0f} sessions/s, {result['errors']} errors, "
                      f"other CPU {result['other_cpu_pct']:.0f} %", file=sys.stderr)
                time_left = deadline - time.monotonic() > (left + 1) * run_cost
                if not result["contended"] or len(discarded) >= retries or not time_left:
                    break
                discarded.append({"config": config.name, **result})
                print("  contended: set aside, run again", file=sys.stderr)
            runs[config.name].append(result)
    summary = {name: summarize_runs(rs) for name, rs in runs.items()}
    w1, w2 = (summary[c.name]["sessions_per_s"] for c in CONFIGS[:2])
    return {
        "configs": {c.name: {"app": c.app, "workers": c.workers, "conf": str(c.conf.relative_to(REPO))}
                    for c in CONFIGS},
        "summary": summary,
        "ratio_w2_over_w1": w2 / w1 if w1 else float("nan"),
        "contended_pct": CONTENDED_PCT,
        "waited_for_quiet_s": waited,
        "runs": runs,
        "discarded_contended_runs": discarded,
    }
