"""Cross-worker bus hop: frames published by one gunicorn_barrel worker, timed at a handler in the other.

The real gunicorn -w 2 with the barrel config runs bench/peers/app.py; one
python-socketio client on each worker starts and reads the measurement
(bench/peers/hop_handlers.py). The same workers then send the same frames
through Redis pub/sub (redis-py), so only the transport differs.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench import cpu
from bench.peers import broadcast
from bench.peers.servers import APP, WORKER_CONNECTIONS, gunicorn_processes
from tests.harness import Client, Gunicorn, spread_clients, wait_for
from tests.test_store_redis import RedisServer

BACKENDS = ("barrel", "redis")
ARRIVAL_WAIT = 10.0


def measure(rate: float, seconds: float, redis: RedisServer | None, log_dir: Path) -> dict[str, Any]:
    env = {"BENCH_MANAGER": "barrel", **({"BENCH_REDIS_URL": redis.url} if redis else {})}
    srv = Gunicorn(app=APP, workers=2, extra_args=WORKER_CONNECTIONS, env=env,
                   log_path=log_dir / "bus_hop.log")
    print(f"== bus hop, {rate:,.0f} frames/s for {seconds} s", flush=True)
    clients: list[Client] = []
    results: dict[str, Any] = {"rate": rate, "seconds": seconds}
    try:
        srv.start()
        clients = spread_clients(srv.url, 2, per_worker=1)
        named = gunicorn_processes(srv)
        if redis and redis.proc:
            named["redis-server"] = redis.proc.pid
        for backend in BACKENDS if redis else BACKENDS[:1]:
            results[backend] = one_transport(backend, clients, named, rate, seconds)
    finally:
        for client in clients:
            client.close()
        srv.stop()
    return results


def one_transport(backend: str, clients: list[Client], named: dict[str, int], rate: float,
                  seconds: float) -> dict[str, Any]:
    sender = clients[0]
    receiver = next(c for c in clients if c.pid != sender.pid)
    for client in (sender, receiver):
        client.call("hop_listen", backend)
    pids = list(named.values())
    began = time.monotonic()
    each = broadcast.process_cpu(named)
    before = cpu.process_seconds(pids), cpu.machine_seconds()[0]
    sent = sender.call("hop_start", {"backend": backend, "rate": rate, "seconds": seconds},
                       timeout=seconds + 60)

    def all_in() -> dict[str, Any] | None:
        answer: dict[str, Any] = receiver.call("hop_result", backend)
        return answer if answer["received"] >= sent["sent"] else None

    try:
        got = wait_for(all_in, ARRIVAL_WAIT, f"{backend} hops at the receiver", interval=0.2)
    except AssertionError:  # reported as frames missing
        got = receiver.call("hop_result", backend)
    after = cpu.process_seconds(pids), cpu.machine_seconds()[0]
    span = time.monotonic() - began
    server, machine = after[0] - before[0], after[1] - before[1]
    lat = got["latency_us"]
    print(f"  {backend:6}: {got['received']}/{sent['sent']} frames in {sent['elapsed']:.1f} s, p50 "
          f"{lat['p50']:,.0f} µs p99 {lat['p99']:,.0f} µs max {got['max_us']:,.0f} µs", flush=True)
    return {
        "sent": sent["sent"], "send_elapsed_s": sent["elapsed"], "received": got["received"],
        "latency_us": lat, "max_us": got["max_us"],
        "cpu_pct": {"server": 100 * server / span, "other": max(0.0, 100 * (machine - server) / span)},
        "cpu_pct_by_process": {name: 100 * (used - each[name]) / span
                               for name, used in broadcast.process_cpu(named).items()},
    }
