"""One process of ``python -m bench.redis_bus``: a worker's Redis bus client, as a sender or a receiver.

    python -m bench.redis_bus_node URL send|recv

Plain gevent (monkey-patched, as in a barrel worker) and the worker's own
``RedisBusClient``. Driven by JSON lines: it prints ``{"ready": ...}`` once
subscribed, reads ``{"start": t, "duration": s, "rate": r, "bytes": n}`` (t
on the monotonic clock, which every process of the machine shares) and
works from t for s seconds: a sender publishes r frames/s, each carrying
the time it was published; a receiver takes the frames published in the
window (however late they arrive, within a drain time after it) and prints
how many it got and their latency percentiles.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402 - after the patch, as in a worker
import sys  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402

from gunicorn_barrel.bus.redis.client import RedisBusClient  # noqa: E402

CHANNEL = "sio:bench"
# Seconds after the window a receiver still takes the window's frames: past the
# bus's gap_timeout (5 s), so that what was not recovered is counted as lost.
DRAIN = 6.0
TICK = 0.005  # a sender's pace: the frames due every 5 ms


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    url, role = sys.argv[1], sys.argv[2]
    client = RedisBusClient(url, 1024 * 1024, namespace="bench")
    latencies: list[float] = []
    window = [float("inf"), float("-inf")]

    def take(frame: Any) -> None:
        sent = frame.payload.get("t")
        if isinstance(sent, float) and window[0] <= sent <= window[1]:
            latencies.append(time.monotonic() - sent)

    if role == "recv":
        # Before the listener first runs: its first subscription covers the channel (on a cluster too).
        client.subscribe(CHANNEL, take)
    if not client.wait_live(20):
        say({"error": "no subscription within 20 s"})
        return
    say({"ready": role})
    order = json.loads(sys.stdin.readline())
    start, duration, rate = float(order["start"]), float(order["duration"]), float(order["rate"])
    window[:] = [start, start + duration]
    pad = "x" * int(order["bytes"])
    gevent.sleep(max(0.0, start - time.monotonic()))
    before = dict(client.counters)
    published = 0
    if role == "send":
        while (now := time.monotonic()) < start + duration:
            due = int((now - start) * rate) + 1
            for _ in range(due - published):
                client.publish(CHANNEL, {"t": time.monotonic(), "pad": pad})
            published = max(published, due)
            gevent.sleep(TICK)
    else:
        gevent.sleep(max(0.0, start + duration + DRAIN - time.monotonic()))
    after = dict(client.counters)
    client.close()
    latencies.sort()

    def pct(q: float) -> float | None:
        if not latencies:
            return None
        return round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2)

    say({"role": role, "published": published, "delivered": len(latencies),
         "p50_ms": pct(0.50), "p99_ms": pct(0.99),
         "gaps": after.get("gaps", 0) - before.get("gaps", 0),
         "frames_lost": after.get("frames_lost", 0) - before.get("frames_lost", 0)})


if __name__ == "__main__":
    main()
