"""`python -m bench.store` (from the repo root): store get/set operations per second, loopback only.

Rows: the embedded backend (SQLite side process over zeromq) and the Redis
backend, each under gunicorn -w 1 and -w 4 (BarrelWorker,
example_confs/barrel_conf.py, app bench.store_app:wsgi), and the peer:
redis-py talking to the same redis-server directly from plain monkey-patched
gevent processes (1 and 4). Every process runs the same loop
(bench.store_app.run_ops) with the same number of greenlets, started at the
same wall-clock time in each process of a row, for a fixed time; HTTP only
carries the command and the result. The rows are measured in interleaved
rounds; the table shows medians, and ratios computed within each round.
Prints a Markdown report and writes bench/results/store.md and store.json.
Default run: about 2 minutes on 2 cores, bounded by --budget.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import functools
import importlib.metadata
import importlib.util
import json
import os
import select
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
import zmq

from bench import cpu, report
from tests.harness import REPO, Gunicorn, children_of, free_port, pid_alive, wait_for

RESULTS = Path(__file__).resolve().parent / "results"
APP = "bench.store_app:wsgi"
OPS = ("get", "set")
STORE_PREFIX = "bench:"
BACKENDS = ("embedded", "redis", "redis-py peer")
PEER_DB = 1  # the Redis backend rows use db 0 of the same redis-server
CONTENDED_PCT = 25.0  # other processes' CPU above this share of a core marks a measurement
LOG_MARKERS = ("ERROR", "Traceback", "WARNING", "CRITICAL")
PACKAGES = ("gunicorn", "gevent", "pyzmq", "msgpack", "redis")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.store",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--concurrency", type=int, default=20, help="greenlets per worker or process")
    parser.add_argument("--keys", type=int, default=1000, help="distinct key names")
    parser.add_argument("--value-bytes", type=int, default=100, help="JSON text of each value, bytes")
    parser.add_argument("--budget", type=float, default=220.0,
                        help="whole run, s: no round is started that would end past it (default 220)")
    parser.add_argument("--quiet-wait", type=float, default=5.0,
                        help="longest wait for a quiet machine before each round, s")
    parser.add_argument("--backends", default="embedded,redis,peer",
                        help="comma-separated subset of embedded,redis,peer")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    return parser.parse_args(argv)


# ---------------------------------------------------------------- processes


class RedisServer:
    """A redis-server of our own on a free loopback port, no persistence, stopped by pid."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log_path = log_dir / "redis-server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--protected-mode", "yes", "--daemonize", "no", "--dir", str(self.log_path.parent)],
                stdout=log, stderr=subprocess.STDOUT,
            )
        client = redis.Redis.from_url(self.url(0), socket_timeout=1.0, socket_connect_timeout=1.0)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log_path}")
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(ready, 10, f"redis-server on port {self.port}")
        self.version = str(client.info("server")["redis_version"])
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class Peer:
    """One `python -m bench.store_app --peer URL` process, driven by JSON lines."""

    def __init__(self, url: str, log_dir: Path, tag: str) -> None:
        self.stderr = open(log_dir / f"{tag}.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.store_app", "--peer", url], cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
        )
        self.pid = self.proc.pid

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"peer {self.pid} gave no answer (exit code {self.proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stderr.close()


# ---------------------------------------------------------------- measuring


@dataclass
class Row:
    """One table row: a backend on a number of processes, and how to run one measurement there."""

    backend: str
    procs: int
    measure: Callable[[str, float, dict[str, Any]], list[dict[str, Any]] | None]
    pids: Callable[[], list[int]]
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {op: [] for op in OPS})

    @property
    def name(self) -> str:
        return f"{self.backend} x{self.procs}"


Parts = list[dict[str, Any]]


def measure_gunicorn(srv: Gunicorn, op: str, start_at: float, params: dict[str, Any]) -> Parts | None:
    """One /bench request per worker, each on a different worker, all starting at ``start_at``.

    A worker already holding a /bench answers 409 at once; such a slot retries on a
    new connection until start_at. None if the requests did not reach every worker.
    """
    query = {**params, "op": op, "start_at": repr(start_at)}
    timeout = start_at - time.time() + params["duration"] + 20.0
    results: list[dict[str, Any] | None] = [None] * srv.workers

    def slot(index: int) -> None:
        tries = 0
        while time.time() < start_at - 0.02:
            tries += 1
            try:
                # A fresh connection each try (no session): another worker may accept it.
                answer = requests.get(f"{srv.url}/bench", params=query, timeout=timeout)
            except requests.RequestException:
                time.sleep(0.01)
                continue
            if answer.status_code == 200:
                results[index] = {**answer.json(), "http_tries": tries}
                return
            if answer.status_code != 409:
                raise RuntimeError(f"/bench answered {answer.status_code}: {answer.text[:300]}")

    threads = [threading.Thread(target=slot, args=(i,), daemon=True) for i in range(srv.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)
    got = [r for r in results if r is not None]
    if len(got) != srv.workers or len({r["pid"] for r in got}) != srv.workers:
        return None
    return got


def measure_peers(peers: list[Peer], op: str, start_at: float, params: dict[str, Any]) -> Parts:
    for peer in peers:
        peer.send({"cmd": "run", **params, "op": op, "start_at": start_at})
    timeout = start_at - time.time() + params["duration"] + 20.0
    return [peer.receive(timeout) for peer in peers]


def gunicorn_pids(srv: Gunicorn) -> list[int]:
    return [srv.pid, *children_of(srv.pid)]


def peer_pids(peers: list[Peer]) -> list[int]:
    return [peer.pid for peer in peers]


def summarize(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The processes' results as one: ops over the span from the first start to the last end."""
    span = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    ops = sum(p["ops"] for p in parts)
    return {
        "ops": ops, "span_s": span, "ops_per_s": ops / span if span > 0 else 0.0,
        "per_process_ops_per_s": [round(p["ops_per_s"]) for p in parts],
        "start_skew_s": max(p["start"] for p in parts) - min(p["start"] for p in parts),
        "misses": sum(p["misses"] for p in parts), "errors": sum(p["errors"] for p in parts),
        "first_errors": [e for p in parts for e in p["first_errors"]][:5],
        "pids": [p["pid"] for p in parts], "http_tries": sum(p.get("http_tries", 0) for p in parts),
    }


def run_measurement(row: Row, op: str, params: dict[str, Any], our_pids: list[int],
                    attempts: int = 4) -> dict[str, Any]:
    """Measure ``op`` on ``row`` once, with the CPU taken meanwhile by us and by other processes."""
    lead = 0.3 if row.procs == 1 else 1.0
    for attempt in range(1, attempts + 1):
        start_at = time.time() + lead
        box: dict[str, Any] = {}

        def go(start: float = start_at, box: dict[str, Any] = box) -> None:
            try:
                box["parts"] = row.measure(op, start, params)
            except Exception as exc:  # reported by the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=go, daemon=True)
        thread.start()
        time.sleep(max(0.0, start_at - time.time()))
        ours0 = cpu.process_seconds(our_pids)
        busy0, _ = cpu.machine_seconds()
        t0 = time.monotonic()
        thread.join(params["duration"] + lead + 30.0)
        wall = time.monotonic() - t0
        ours = cpu.process_seconds(our_pids) - ours0
        busy = cpu.machine_seconds()[0] - busy0
        if "error" in box:
            raise box["error"]
        parts = box.get("parts")
        if parts is None:
            continue  # the requests did not reach every worker: again
        result = summarize(parts)
        result.update(attempt=attempt, machine_cpu_pct=100 * busy / wall,
                      other_cpu_pct=100 * max(busy - ours, 0.0) / wall)
        result["contended"] = result["other_cpu_pct"] > CONTENDED_PCT
        return result
    raise RuntimeError(f"{row.name} {op}: no {attempts} tries reached {row.procs} distinct workers")


# ---------------------------------------------------------------- the run


def log_issues(paths: list[Path]) -> list[str]:
    lines: list[str] = []
    for path in paths:
        if path.exists():
            lines += [f"{path.name}: {line}" for line in path.read_text(errors="replace").splitlines()
                      if any(m in line for m in LOG_MARKERS)]
    return lines


def redis_backend_available() -> bool:
    try:
        return importlib.util.find_spec("gunicorn_barrel.store.redis_backend") is not None
    except ImportError:
        return False


def machine(redis_version: str | None) -> dict[str, Any]:
    info = report.machine()
    info = {k: info[k] for k in ("nproc", "cpu_model", "kernel", "python", "gunicorn", "gevent")}
    info.update({pkg: importlib.metadata.version(pkg) for pkg in PACKAGES})
    info.update(libzmq=zmq.zmq_version(), sqlite=sqlite3.sqlite_version, redis_server=redis_version)
    return info


def ratio_stats(rows: dict[tuple[str, int], Row], num: tuple[str, int], den: tuple[str, int],
                op: str) -> dict[str, Any] | None:
    """Median over rounds of num/den, each ratio taken within one round."""
    if num not in rows or den not in rows:
        return None
    pairs = zip(rows[num].runs[op], rows[den].runs[op], strict=False)
    each = [a["ops_per_s"] / b["ops_per_s"] for a, b in pairs if b["ops_per_s"] > 0]
    return {"median": statistics.median(each), "each_run": each} if each else None


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.monotonic()
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    log_dir = Path(tempfile.mkdtemp(prefix="barrel-bench-store-"))
    wanted = {b.strip() for b in args.backends.split(",")}
    have_redis_backend = redis_backend_available()
    params = {"n": 10**9, "concurrency": args.concurrency, "duration": args.duration,
              "prefix": STORE_PREFIX, "keys": args.keys, "value_bytes": args.value_bytes}
    redis_server = RedisServer(log_dir)
    servers: list[Gunicorn] = []
    peers: list[Peer] = []
    notes: list[str] = []
    try:
        if wanted & {"redis", "peer"}:
            redis_server.start()
        configs: list[tuple[str, int, dict[str, str]]] = []
        if "embedded" in wanted:
            env = {"BARREL_STORE": "embedded", "BARREL_STORE_DURABILITY": "process"}
            configs += [("embedded", 1, env), ("embedded", 4, env)]
        if "redis" in wanted:
            if have_redis_backend:
                env = {"BARREL_STORE": redis_server.url(0)}
                configs += [("redis", 1, env), ("redis", 4, env)]
            else:
                notes.append("Redis backend rows not measured: gunicorn_barrel.store.redis_backend "
                             "is not importable.")
        for backend, workers, env in configs:
            servers.append(Gunicorn(app=APP, workers=workers, env=env,
                                    log_path=log_dir / f"gunicorn-{backend}-w{workers}.log"))
        with concurrent.futures.ThreadPoolExecutor(len(servers) or 1) as pool:
            list(pool.map(lambda s: s.start(60.0), servers))
        rows: dict[tuple[str, int], Row] = {}
        for (backend, workers, _env), srv in zip(configs, servers, strict=True):
            rows[(backend, workers)] = Row(
                backend, workers,
                functools.partial(measure_gunicorn, srv), functools.partial(gunicorn_pids, srv),
            )
        if "peer" in wanted:
            for count in (1, 4):
                group = [Peer(redis_server.url(PEER_DB), log_dir, f"peer{count}-{i}") for i in range(count)]
                peers += group
                rows[("redis-py peer", count)] = Row(
                    "redis-py peer", count,
                    functools.partial(measure_peers, group), functools.partial(peer_pids, group),
                )
            for peer in peers:
                if "ready" not in peer.receive(20.0):
                    raise RuntimeError(f"peer {peer.pid} did not start")

        def our_pids() -> list[int]:
            pids = [os.getpid(), *(pid for row in rows.values() for pid in row.pids())]
            if redis_server.proc is not None:
                pids.append(redis_server.proc.pid)
            return pids

        # Every key exists before the first get: one fill per store.
        fill = {"prefix": STORE_PREFIX, "keys": args.keys, "value_bytes": args.value_bytes}
        filled: set[str] = set()
        for (backend, _workers), srv in zip(((c[0], c[1]) for c in configs), servers, strict=True):
            if backend == "redis" and "redis" in filled:
                continue
            answer = requests.get(f"{srv.url}/fill", params=fill, timeout=60)
            answer.raise_for_status()
            filled.add(backend)
        if peers:
            peers[0].send({"cmd": "fill", **fill})
            peers[0].receive(60.0)
        # Warm-up (discarded): every process connects and runs the loop once.
        for row in rows.values():
            for op in OPS:
                run_measurement(row, op, {**params, "duration": 0.3}, our_pids())
        setup_s = time.monotonic() - started

        # Rows of the same process count side by side: the ratios to the peer are taken
        # between measurements seconds apart.
        order = sorted(rows.values(), key=lambda row: (row.procs, BACKENDS.index(row.backend)))
        waited = 0.0
        round_times: list[float] = []
        rounds_done = 0
        for r in range(args.rounds):
            estimate = max(round_times) if round_times else 0.0
            if time.monotonic() - started + estimate > args.budget:
                notes.append(f"Stopped after {rounds_done} of {args.rounds} rounds: the next would pass "
                             f"the {args.budget:.0f} s budget.")
                break
            t_round = time.monotonic()
            waited += cpu.wait_for_quiet(args.quiet_wait)
            pids = our_pids()
            for op in OPS:
                for row in (order if r % 2 == 0 else order[::-1]):
                    result = run_measurement(row, op, params, pids)
                    result["round"] = r
                    row.runs[op].append(result)
                    print(f"round {r + 1} {op:3} {row.name:18} {result['ops_per_s']:>9,.0f} ops/s "
                          f"(other CPU {result['other_cpu_pct']:.0f} %)", file=sys.stderr, flush=True)
            round_times.append(time.monotonic() - t_round)
            rounds_done += 1
        issues = log_issues([s.log_path for s in servers] + [p for p in log_dir.glob("peer*.log")])
        redis_version = getattr(redis_server, "version", None)
    finally:
        for srv in servers:
            srv.stop()
        for peer in peers:
            peer.stop()
        redis_server.stop()
    leftovers = [p for s in servers for p in s.started_pids if pid_alive(p)]
    leftovers += [p.pid for p in peers if pid_alive(p.pid)]
    if redis_server.proc is not None and pid_alive(redis_server.proc.pid):
        leftovers.append(redis_server.proc.pid)

    others = [r["other_cpu_pct"] for row in order for op in OPS for r in row.runs[op]] or [0.0]
    summary: dict[str, Any] = {}
    for row in order:
        backend, procs = row.backend, row.procs
        summary[row.name] = {"backend": backend, "procs": procs, **{
            op: {"median_ops_per_s": statistics.median(r["ops_per_s"] for r in row.runs[op]) if row.runs[op]
                 else None, "each_run": [r["ops_per_s"] for r in row.runs[op]],
                 "contended_each_run": [r["contended"] for r in row.runs[op]]}
            for op in OPS}}
    ratios: dict[str, Any] = {}
    for backend in ("embedded", "redis"):
        for procs in (1, 4):
            for op in OPS:
                ratios[f"{backend} x{procs} / peer x{procs} {op}"] = ratio_stats(
                    rows, (backend, procs), ("redis-py peer", procs), op)
    for backend in ("embedded", "redis", "redis-py peer"):
        for op in OPS:
            ratios[f"{backend} x4 / x1 {op}"] = ratio_stats(rows, (backend, 4), (backend, 1), op)
    for procs in (1, 4):
        for op in OPS:
            ratios[f"embedded x{procs} / redis x{procs} {op}"] = ratio_stats(
                rows, ("embedded", procs), ("redis", procs), op)
    return {
        "date": date, "elapsed_s": time.monotonic() - started, "setup_s": setup_s,
        "machine": machine(redis_version), "args": {k: (str(v) if isinstance(v, Path) else v)
                                                      for k, v in vars(args).items()},
        "rounds_done": rounds_done, "waited_for_quiet_s": waited, "notes": notes,
        "summary": summary, "ratios": {k: v for k, v in ratios.items() if v is not None},
        "runs": {row.name: row.runs for row in order},
        "other_cpu_pct": {"min": min(others), "median": statistics.median(others), "max": max(others)},
        "log_dir": str(log_dir), "log_issues": issues[:20], "log_issue_count": len(issues),
        "leftover_pids": leftovers, "redis_backend_importable": have_redis_backend,
    }


# ---------------------------------------------------------------- report


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def markdown(res: dict[str, Any]) -> str:
    m, a, oc = res["machine"], res["args"], res["other_cpu_pct"]
    lines = ["# Store benchmark: operations per second", "",
             f"Command: `{res['command']}` ({res['rounds_done']} rounds of {a['duration']} s per "
             f"measurement, {a['concurrency']} greenlets per process); "
             f"whole run {res['elapsed_s']:.0f} s.", "",
             "| backend | workers/processes | get ops/s | set ops/s | get ÷ peer | set ÷ peer "
             "| get each run | set each run |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    ratios = res["ratios"]

    def total(what: str) -> int:
        return sum(r[what] for row in res["runs"].values() for rs in row.values() for r in rs)

    def each(runs: list[float], contended: list[bool]) -> str:
        return ", ".join(_n(v) + ("*" if c else "") for v, c in zip(runs, contended, strict=True))

    for s in res["summary"].values():
        label = {"embedded": "embedded (SQLite side process)", "redis": "Redis backend",
                 "redis-py peer": "peer: redis-py direct, gevent"}[s["backend"]]
        unit = "gunicorn -w" if s["backend"] != "redis-py peer" else "processes:"
        vs = []
        for op in OPS:
            r = ratios.get(f"{s['backend']} x{s['procs']} / peer x{s['procs']} {op}")
            vs.append(f"{r['median']:.2f}" if r else "")
        lines.append(f"| {label} | {unit} {s['procs']} | {_n(s['get']['median_ops_per_s'])} "
                     f"| {_n(s['set']['median_ops_per_s'])} | {vs[0]} | {vs[1]} "
                     f"| {each(s['get']['each_run'], s['get']['contended_each_run'])} "
                     f"| {each(s['set']['each_run'], s['set']['contended_each_run'])} |")
    lines += ["", "Ratios, each taken within one round (same machine state), median over the rounds:", "",
              "| ratio | get | set | get each round | set each round |", "| --- | ---: | ---: | --- | --- |"]
    names = sorted({k.rsplit(" ", 1)[0] for k in ratios}, key=lambda k: list(ratios).index(k + " get"))
    for base in names:
        g, s_ = ratios.get(base + " get"), ratios.get(base + " set")
        if g and s_:
            lines.append(f"| {base} | {g['median']:.2f} | {s_['median']:.2f} "
                         f"| {', '.join(f'{v:.2f}' for v in g['each_run'])} "
                         f"| {', '.join(f'{v:.2f}' for v in s_['each_run'])} |")
    lines += ["", "## Conditions", "",
              f"- Date: {res['date']}; whole run {res['elapsed_s']:.0f} s (setup, fills and warm-up "
              f"{res['setup_s']:.0f} s).",
              f"- Machine: {m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}; Python {m['python']}, "
              f"gunicorn {m['gunicorn']}, gevent {m['gevent']}, pyzmq {m['pyzmq']} (libzmq {m['libzmq']}), "
              f"msgpack {m['msgpack']}, SQLite {m['sqlite']}, redis-py {m['redis']} (no hiredis), "
              f"redis-server {m['redis_server']}.",
              "- Loopback only (127.0.0.1). Everything (gunicorn workers, the store process, the "
              f"broadcaster, redis-server, peers, this driver) shares the {m['nproc']} cores.",
              "- Embedded backend: BARREL_STORE=embedded, **store_durability=process** (SQLite WAL, "
              "synchronous=NORMAL: no fsync per write), a fresh SQLite file per gunicorn instance in /tmp. "
              "Redis backend: BARREL_STORE=redis://127.0.0.1:PORT/0. Peer: redis-py to db 1 of the same "
              "redis-server (a redis-server started by the bench on a free port with `--save \"\" "
              "--appendonly no`), json.dumps/json.loads around SET/GET like the store API does. "
              "A store set does more than the peer's SET: it publishes a change event (embedded: "
              "SQLite write in a batched transaction, then the bus broadcaster; Redis backend: one Lua "
              "script doing SET, INCR of a version key and PUBLISH); a get is one SQLite SELECT (embedded, "
              "msgpack over zeromq to the store process) or one GET (Redis backend).",
              f"- Workload: values are {a['value_bytes']}-byte JSON strings (their JSON text), keys "
              f"`bench:0`..`bench:{a['keys'] - 1}` chosen at random per call; every key set once before "
              f"the first get; gets that did not find a value of the right size count as misses. "
              f"In each process {a['concurrency']} greenlets call get (or set) in a loop for "
              f"{a['duration']} s, every process of a row starting at the same wall-clock time; a row's "
              "ops/s is all its processes' operations over the span from the first start to the last end.",
              "- gunicorn rows: BarrelWorker with example_confs/barrel_conf.py running bench.store_app:wsgi; "
              "one GET /bench per worker carries the command and the result (HTTP is not timed). A worker "
              "holding a /bench answers 409 to another one, which is retried on a new connection, so the "
              "4 requests of a -w 4 measurement run on 4 distinct worker pids (checked).",
              f"- Rounds: {res['rounds_done']}, rows interleaved (order reversed every other round), "
              "gets then sets; a 0.3 s warm-up measurement of each row first (discarded). All the servers "
              "and peers stay up for the whole run, idle when not measured.",
              f"- The machine is shared and noisy: before each round the bench waited for it to be quiet "
              f"(under {cpu.QUIET_PCT:.0f} % of a core, at most {a['quiet_wait']:.0f} s; "
              f"{res['waited_for_quiet_s']:.0f} s in all). \\* marks a measurement during which other "
              f"processes took over {CONTENDED_PCT:.0f} % of a core (kept: no reruns). CPU of other "
              f"processes during the measurements (% of one core; 100 = one core of the "
              f"{m['nproc']}): min {oc['min']:.0f}, median {oc['median']:.0f}, max {oc['max']:.0f}; "
              "ours = every process the bench started plus itself, other = the machine's busy time "
              "(/proc/stat) less ours.",
              f"- Misses: {total('misses')}; errors: {total('errors')}; gunicorn/peer log lines with "
              f"ERROR/WARNING/Traceback: {res['log_issue_count']} (logs: {res['log_dir']}); processes "
              f"left running after the stop: {len(res['leftover_pids'])}."]
    lines += [f"- {note}" for note in res["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = {"command": " ".join(["python -m bench.store", *(sys.argv[1:] if argv is None else argv)]),
               **run(args)}
    report.save(args.out, "store", results, markdown(results))


if __name__ == "__main__":
    main()
