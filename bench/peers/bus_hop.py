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
from bench.peers.servers import APP, WORKER_CONNECTIONS
from tests.harness import Gunicorn, children_of, spread_clients, wait_for
from tests.test_store_redis import RedisServer

BACKENDS = ("barrel", "redis")


def measure(rate: float, seconds: float, redis: RedisServer | None, log_dir: Path) -> dict[str, Any]:
    env = {"BENCH_MANAGER": "barrel", **({"BENCH_REDIS_URL": redis.url} if redis else {})}
    srv = Gunicorn(app=APP, workers=2, extra_args=WORKER_CONNECTIONS, env=env,
                   log_path=log_dir / "bus_hop.log")
    print(f"== bus hop, {rate:,.0f} frames/s for {seconds} s", flush=True)
    clients = []
    results: dict[str, Any] = {"rate": rate, "seconds": seconds}
    try:
        srv.start()
        clients = spread_clients(srv.url, 2, per_worker=1)
        sender = clients[0]
        receiver = next(c for c in clients if c.pid != sender.pid)
        for backend in BACKENDS if redis else BACKENDS[:1]:
            for client in (sender, receiver):
                client.call("hop_listen", backend)
            pids = [srv.pid, *children_of(srv.pid), *([redis.proc.pid] if redis and redis.proc else [])]
            began = time.monotonic()
            before = cpu.process_seconds(pids), cpu.machine_seconds()[0]
            sent = sender.call("hop_start", {"backend": backend, "rate": rate, "seconds": seconds},
                               timeout=seconds + 60)

            def all_in(backend: str = backend, sent: dict[str, Any] = sent) -> dict[str, Any] | None:
                answer = receiver.call("hop_result", backend)
                return answer if answer["received"] >= sent["sent"] else None

            try:
                got = wait_for(all_in, 10, f"{backend} hops at the receiver", interval=0.2)
            except AssertionError:
                got = receiver.call("hop_result", backend)
            after = cpu.process_seconds(pids), cpu.machine_seconds()[0]
            span = time.monotonic() - began
            server, machine = after[0] - before[0], after[1] - before[1]
            results[backend] = {
                "sent": sent["sent"], "send_elapsed_s": sent["elapsed"], "received": got["received"],
                "latency_us": got["latency_us"], "max_us": got["max_us"],
                "cpu_pct": {"server": 100 * server / span,
                            "other": max(0.0, 100 * (machine - server) / span)},
            }
            lat = got["latency_us"]
            print(f"  {backend:6}: {got['received']}/{sent['sent']} frames in {sent['elapsed']:.1f} s, p50 "
                  f"{lat['p50']:,.0f} µs p99 {lat['p99']:,.0f} µs max {got['max_us']:,.0f} µs", flush=True)
    finally:
        for client in clients:
            client.close()
        srv.stop()
    return results
