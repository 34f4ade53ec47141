"""Round trip of one polling request served locally vs handed off to its session's owner.

On BarrelWorker -w 2: open a few sessions (polling handshakes), then, per
sample, open a fresh TCP connection, learn from `GET /plain` which worker
accepted it, and time one `POST ...&sid=<sid>` with body "3" (an engine.io
PONG, answered 200 "OK") on that same keep-alive connection, for a sid drawn
at random. The sample is "local" when the accepting worker owns the sid,
"handed off" otherwise (the request then crosses to the owner with its socket).
"""
from __future__ import annotations

import http.client
import json
import random
import sys
import time
from collections import Counter
from typing import Any

from bench.stats import summarize
from tests.harness import Gunicorn
from tests.test_polling import owner_pid

POLL = "/socket.io/?EIO=4&transport=polling"
TIMEOUT = 10.0
MAX_HANDSHAKES = 200
HANDSHAKE_BATCH = 8
MAX_ERRORS = 100


def open_sessions(port: int, workers: list[int], per_worker: int) -> list[str]:
    """Polling handshakes until every worker owns ``per_worker`` sessions.

    Handshakes go out in batches of connections opened together: one at a
    time, an idle server tends to accept them all in the same worker.
    """
    by_owner: dict[int, list[str]] = {pid: [] for pid in workers}
    for _ in range(MAX_HANDSHAKES // HANDSHAKE_BATCH):
        for sid in _handshake_batch(port, HANDSHAKE_BATCH):
            owned = by_owner.setdefault(owner_pid(sid), [])
            if len(owned) < per_worker:
                owned.append(sid)
        if all(len(sids) >= per_worker for sids in by_owner.values()):
            return [sid for sids in by_owner.values() for sid in sids]
    counts = {pid: len(sids) for pid, sids in by_owner.items()}
    raise RuntimeError(f"{MAX_HANDSHAKES} handshakes left sessions per worker at {counts}, "
                       f"short of {per_worker}")


def _handshake_batch(port: int, count: int) -> list[str]:
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT) for _ in range(count)]
    try:
        for conn in conns:
            conn.connect()
        for conn in conns:
            conn.request("GET", POLL)
        return [str(json.loads(conn.getresponse().read().decode()[1:])["sid"]) for conn in conns]
    finally:
        for conn in conns:
            conn.close()


def one_sample(port: int, sid: str) -> tuple[int, int]:
    """(accepting worker pid, POST round trip in ns) over one fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", "/plain")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200 or not body.startswith(b"plain route from "):
            raise RuntimeError(f"GET /plain -> {response.status} {body[:100]!r}")
        accepted_by = int(body.rsplit(b" ", 1)[1])
        t0 = time.perf_counter_ns()
        conn.request("POST", f"{POLL}&sid={sid}", body=b"3")
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter_ns() - t0
    finally:
        conn.close()
    if (response.status, body) != (200, b"OK"):
        raise RuntimeError(f"POST PONG -> {response.status} {body[:100]!r}")
    return accepted_by, elapsed


def measure(srv: Gunicorn, samples: int, budget_s: float, warmup: int,
            per_worker: int = 2, seed: int = 1) -> dict[str, Any]:
    """Collect up to ``samples`` timed requests within ``budget_s`` seconds (after ``warmup`` untimed)."""
    rng = random.Random(seed)
    workers = srv.worker_pids()
    sids = open_sessions(srv.port, workers, per_worker)
    times: dict[str, list[int]] = {"local": [], "handed_off": []}
    accepted: Counter[int] = Counter()
    errors: list[str] = []
    start = time.monotonic()
    deadline = start + budget_s
    taken = 0
    while taken < samples + warmup and time.monotonic() < deadline:
        sid = rng.choice(sids)
        try:
            accepted_by, elapsed = one_sample(srv.port, sid)
        except Exception as exc:  # counted and reported, never retried silently
            errors.append(repr(exc))
            if len(errors) >= MAX_ERRORS:
                break
            time.sleep(0.01)
            continue
        taken += 1
        if taken <= warmup:
            continue
        accepted[accepted_by] += 1
        times["local" if accepted_by == owner_pid(sid) else "handed_off"].append(elapsed)
    if taken < samples + warmup:
        print(f"latency: time budget of {budget_s} s reached after {taken - warmup} samples", file=sys.stderr)
    rows = {kind: summarize(values, 1e3) for kind, values in times.items()}
    return {
        "workers": len(workers),
        "sessions": len(sids),
        "sessions_per_worker": per_worker,
        "warmup_samples": warmup,
        "rows_us": rows,
        "handoff_overhead_p50_us": rows["handed_off"]["p50"] - rows["local"]["p50"],
        "connections_accepted_by_worker": {str(pid): n for pid, n in sorted(accepted.items())},
        "errors": len(errors),
        "error_samples": errors[:10],
        "elapsed_s": time.monotonic() - start,
    }
