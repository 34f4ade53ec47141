"""Bus hop events of the bench app: a frame published in one worker, timed at a handler in another.

Two transports in the same gunicorn_barrel workers, so that only the transport
differs: the barrel bus (gunicorn_barrel.events, through the broadcaster side
process) and Redis pub/sub (redis-py, on the redis-server at BENCH_REDIS_URL).
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import gevent

from bench import stats

CHANNEL = "bench-hop"
_samples: dict[str, list[int]] = {"barrel": [], "redis": []}
_listening: set[str] = set()


def _record(backend: str, payload: dict[str, Any]) -> None:
    if payload["pid"] != os.getpid():  # a worker's own frames do not hop
        _samples[backend].append(int((time.time() - payload["t"]) * 1e9))


def _redis() -> Any:
    import redis

    return redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])


def _listen(backend: str) -> None:
    if backend in _listening:
        return
    _listening.add(backend)
    if backend == "barrel":
        from gunicorn_barrel import events

        events.on(CHANNEL, lambda data: _record("barrel", data))
        return
    pubsub = _redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(CHANNEL)

    def run() -> None:
        for message in pubsub.listen():
            if message["type"] == "message":
                _record("redis", json.loads(message["data"]))

    gevent.spawn(run)


def _publish(backend: str, rate: float, seconds: float) -> dict[str, Any]:
    """Publish ``rate`` frames a second: each tick sends those due (Redis: one pipeline per tick)."""
    if backend == "barrel":
        from gunicorn_barrel import events

        def send(batch: list[dict[str, Any]]) -> None:
            for payload in batch:
                events.emit(CHANNEL, payload)
    else:
        client = _redis()

        def send(batch: list[dict[str, Any]]) -> None:
            pipe = client.pipeline(transaction=False)
            for payload in batch:
                pipe.publish(CHANNEL, json.dumps(payload))
            pipe.execute()

    total, start, sent = round(rate * seconds), time.monotonic(), 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        send([{"t": time.time(), "pid": os.getpid(), "n": n} for n in range(sent, due)])
        sent = due
        if sent < total:  # no wait after the last one: the elapsed time is the sending's
            gevent.sleep(max(0.0, start + sent / rate - time.monotonic()))
    return {"sent": sent, "elapsed": time.monotonic() - start, "pid": os.getpid()}


def register(sio: Any) -> None:
    @sio.event
    def hop_listen(sid: str, backend: str) -> dict[str, Any]:
        _listen(backend)
        _samples[backend].clear()
        return {"pid": os.getpid()}

    @sio.event
    def hop_start(sid: str, data: dict[str, Any]) -> dict[str, Any]:
        return _publish(data["backend"], float(data["rate"]), float(data["seconds"]))

    @sio.event
    def hop_result(sid: str, backend: str) -> dict[str, Any]:
        samples = _samples[backend]
        return {"pid": os.getpid(), "received": len(samples), "latency_us": stats.summarize(samples, 1e3),
                "max_us": max(samples, default=0) / 1e3}
