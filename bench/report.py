"""Machine description and the Markdown rendering of the results."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

from bench import cpu

PACKAGES = ("gunicorn", "gevent", "python-engineio", "python-socketio")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        **{pkg: importlib.metadata.version(pkg) for pkg in PACKAGES},
    }


def _f(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def latency_table(lat: dict[str, Any]) -> list[str]:
    lines = [
        "| polling POST (PONG) on BarrelWorker -w 2 | n | p50 µs | p99 µs | mean µs |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, label in (("local", "local (accepting worker owns the sid)"),
                       ("handed_off", "handed off (SCM_RIGHTS to the owner)")):
        row = lat["rows_us"][key]
        lines.append(f"| {label} | {row['n']} | {_f(row['p50'])} | {_f(row['p99'])} | {_f(row['mean'])} |")
    overhead = _f(lat["handoff_overhead_p50_us"])
    lines.append(f"| **handed-off overhead (p50 difference)** | | **{overhead}** | | |")
    return lines


def throughput_table(tp: dict[str, Any]) -> list[str]:
    lines = [
        "| server | sessions/s (median) | each run | request p50 ms | request p99 ms "
        "| errors | server CPU % | load gen CPU % | other CPU % (max) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in tp["summary"].items():
        marks = ["*" if contended else "" for contended in s["contended_each_run"]]
        each = ", ".join(_f(v) + mark for v, mark in zip(s["sessions_per_s_each_run"], marks, strict=True))
        lines.append(
            f"| {name} | {_f(s['sessions_per_s'])} | {each} | {_f(s['latency_p50_ms'], 2)} "
            f"| {_f(s['latency_p99_ms'], 2)} | {s['errors']} | {_f(s['server_cpu_pct'])} "
            f"| {_f(s['loadgen_cpu_pct'])} | {_f(s['other_cpu_pct_max'])} |"
        )
    lines.append(f"| **ratio BarrelWorker -w 2 / -w 1** | **{tp['ratio_w2_over_w1']:.2f}** | | | | | | | |")
    lines += ["", f"\\* contended run: other processes took over {tp['contended_pct']:.0f} % of a core "
              "during it (kept when no rerun or time was left)."]
    return lines


def conditions(results: dict[str, Any]) -> list[str]:
    m, args, lat, tp = results["machine"], results["args"], results["latency"], results["throughput"]
    sessions = "one keep-alive connection per client loop" if args["connection"] == "keepalive" \
        else f"connection mode {args['connection']}"
    lines = [
        f"- Date: {results['date']}; duration of the whole run: {results['elapsed_s']:.0f} s"
        f"{' (--quick)' if args['quick'] else ''}.",
        f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}; Python {m['python']}, "
        f"gunicorn {m['gunicorn']}, gevent {m['gevent']}, python-engineio {m['python-engineio']}, "
        f"python-socketio {m['python-socketio']}.",
        "- Loopback only (127.0.0.1). **Server and load generator share the "
        f"{m['nproc']} cores**. CPU %: 100 = one core busy for the whole load run; server = "
        "the gunicorn arbiter and its children (workers, barrel sidecars), from /proc; other = "
        "the machine's busy time (/proc/stat) minus server and load generator: CPU taken by anything "
        "else (other processes, kernel), the largest of the runs.",
        f"- Latency: {lat['sessions']} polling sessions ({lat['sessions_per_worker']} per worker); "
        "each sample is a fresh TCP connection, `GET /plain` (tells the accepting worker), then the timed "
        "`POST ...&sid=<random session>` body `3` on the same keep-alive connection "
        f"(time.perf_counter_ns, client side, http.client); {lat['warmup_samples']} untimed warm-up "
        f"samples; errors: {lat['errors']}; other CPU during it: {lat['other_cpu_pct']:.0f} %.",
        f"- Throughput: a session is GET handshake -> POST `40` -> GET (`40...`) -> POST `1`; "
        f"{args['concurrency']} gevent greenlets in one load-generator process (http.client, "
        f"{sessions}), {args['warmup']} s warm-up then {args['duration']} s measured; "
        f"{args['rounds']} interleaved round(s) of the three servers, each run on a freshly started "
        "gunicorn; medians over the runs; errors (non-200, bad payloads, exceptions) summed over all "
        "runs, warm-up included.",
        "- BarrelWorker rows run `tests.apps.sio_app:wsgi` (python-socketio with BarrelManager) with "
        "example_confs/barrel_conf.py; the peer row runs `bench.plain_sio_app:wsgi` (no barrel) with "
        "bench/plain_conf.py (`worker_class = \"gevent\"`).",
    ]
    discarded = tp["discarded_contended_runs"]
    kept = sum(s["contended_runs_kept"] for s in tp["summary"].values())
    waited = lat["waited_for_quiet_s"] + tp["waited_for_quiet_s"]
    lines.append(f"- The machine is shared with other work: each phase first waited for it to be quiet "
                 f"(under {cpu.QUIET_PCT:.0f} % of a core busy; {waited:.0f} s waited in all). Runs during "
                 f"which other processes took over {tp['contended_pct']:.0f} % of a core: {len(discarded)} "
                 f"set aside and run again, {kept} kept (no reruns or time left).")
    log_lines = sum(len(r["log_issues"]) for runs in tp["runs"].values() for r in runs)
    log_lines += len(lat["log_issues"])
    lines.append(f"- gunicorn log lines with ERROR/WARNING/Traceback/Invalid session, all runs: {log_lines} "
                 f"(logs: {results['log_dir']}).")
    if args["connection"] != "per-request":
        lines.append(
            "- A connection stays on the worker that accepted it and every session it opens is owned "
            "there: the throughput rows measure the barrel worker's per-request cost (peek, routing, "
            "bus), not handoffs (see the round-trip table for those)."
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Polling benchmark", "", "## Round trip: local vs handed off", ""]
    lines += latency_table(results["latency"])
    lines += ["", "## Polling-only socket.io clients served per second", ""]
    lines += throughput_table(results["throughput"])
    lines += ["", "## Conditions", ""]
    lines += conditions(results)
    return "\n".join(lines) + "\n"


def save(out: Path, stem: str, results: dict[str, Any], text: str) -> None:
    """Print the Markdown ``text`` and write it and the JSON ``results`` as ``out/stem.md`` and ``.json``."""
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / f"{stem}.md").write_text(text)
