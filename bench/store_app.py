"""Store operations in a loop inside one process, for `python -m bench.store`.

As a WSGI app (gunicorn, BarrelWorker, example_confs/barrel_conf.py), GET routes answering JSON:

    /ready-check   200 (tests.harness waits for it)
    /fill?prefix=bench:&keys=1000&value_bytes=100
                   set every key once (so that gets find a value)
    /bench?op=get|set&n=5000&concurrency=20[&duration=S][&start_at=EPOCH]
          [&prefix=bench:][&keys=1000][&value_bytes=100]
                   run n operations (or as many as fit in duration seconds) with
                   `concurrency` greenlets in this worker, on random keys among `keys`
                   names, values being JSON strings of value_bytes bytes, starting at
                   the wall-clock time start_at: {"ops", "seconds", "pid", "start", "end", ...}.
                   A worker runs one /bench at a time: another one arriving meanwhile
                   gets 409 {"busy": pid} at once, so a client can retry until its
                   requests have landed on distinct workers.

HTTP is outside the measurement: the timed part is the loop of store calls.

`python -m bench.store_app --peer redis://127.0.0.1:PORT/1` is the peer: the same
loop, with redis-py talking to redis-server directly, in a plain gevent process
(monkey-patched first), driven by one JSON command a line on stdin, one JSON
answer a line on stdout.
"""
from __future__ import annotations

import itertools
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import gevent

Getter = Callable[[str], Any]
Setter = Callable[[str, Any], None]
StartResponse = Callable[..., Any]

MAX_ERRORS = 100  # a loop stops after this many failed calls (a dead backend)
DEFAULTS: dict[str, Any] = {"n": 5000, "concurrency": 20, "duration": 0.0, "start_at": 0.0,
                            "prefix": "bench:", "keys": 1000, "value_bytes": 100}


def value_for(tag: str, length: int) -> str:
    """A string whose JSON text is ``length + 2`` bytes (ASCII, no escapes)."""
    return (tag + ":").ljust(length, "x")[:length]


def fill(put: Setter, prefix: str, keys: int, value_bytes: int, concurrency: int = 20) -> dict[str, Any]:
    """Set each of the ``keys`` names once."""
    names = iter(range(keys))
    t0 = time.perf_counter()

    def loop() -> None:
        for i in names:
            put(f"{prefix}{i}", value_for(f"fill:{i}", value_bytes - 2))

    gevent.joinall([gevent.spawn(loop) for _ in range(concurrency)], raise_error=True)
    return {"filled": keys, "seconds": time.perf_counter() - t0, "pid": os.getpid()}


def run_ops(get: Getter, put: Setter, op: str, n: int, concurrency: int, duration: float,
            start_at: float, prefix: str, keys: int, value_bytes: int) -> dict[str, Any]:
    """Run ``op`` n times (or until ``duration`` s have passed, if > 0) with ``concurrency`` greenlets."""
    if op not in ("get", "set"):
        raise ValueError(f"op must be get or set, got {op!r}")
    delay = start_at - time.time()
    if delay > 0:
        gevent.sleep(delay)
    length = value_bytes - 2
    pid = os.getpid()
    tickets = itertools.count()
    counts = {"ops": 0, "misses": 0, "errors": 0}
    first_errors: list[str] = []
    start_wall = time.time()
    t0 = time.perf_counter()
    deadline = t0 + duration if duration > 0 else float("inf")

    def loop(seed: int) -> None:
        rng = random.Random(seed)
        while True:
            i = next(tickets)
            if i >= n or time.perf_counter() >= deadline or counts["errors"] >= MAX_ERRORS:
                return
            key = f"{prefix}{rng.randrange(keys)}"
            try:
                if op == "get":
                    found = get(key)
                    if not (isinstance(found, str) and len(found) == length):
                        counts["misses"] += 1
                else:
                    put(key, value_for(f"{pid}:{i}", length))
            except Exception as exc:  # counted and reported: the bench must finish
                counts["errors"] += 1
                if len(first_errors) < 5:
                    first_errors.append(f"{type(exc).__name__}: {exc}")
                continue
            counts["ops"] += 1

    gevent.joinall([gevent.spawn(loop, pid * 1000 + g) for g in range(concurrency)])
    seconds = time.perf_counter() - t0
    return {"op": op, "pid": pid, "ops": counts["ops"], "seconds": seconds,
            "ops_per_s": counts["ops"] / seconds if seconds > 0 else 0.0,
            "start": start_wall, "end": start_wall + seconds,
            "late_s": start_wall - start_at if start_at else 0.0,
            "misses": counts["misses"], "errors": counts["errors"], "first_errors": first_errors,
            "concurrency": concurrency}


def _params(query: str) -> dict[str, Any]:
    raw = {k: v[-1] for k, v in parse_qs(query).items()}
    params = dict(DEFAULTS)
    for name, default in DEFAULTS.items():
        if name in raw:
            params[name] = type(default)(raw[name])
    params["op"] = raw.get("op", "get")
    return params


_busy = False


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> Iterable[bytes]:
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    global _busy
    from gunicorn_barrel.store import get_store

    path = environ.get("PATH_INFO", "")
    try:
        params = _params(environ.get("QUERY_STRING", ""))
    except ValueError as exc:
        return _json(start_response, "400 Bad Request", {"error": str(exc)})
    if path == "/fill":
        store = get_store()
        return _json(start_response, "200 OK",
                     fill(store.set, params["prefix"], params["keys"], params["value_bytes"]))
    if path == "/bench":
        if _busy:
            return _json(start_response, "409 Conflict", {"busy": os.getpid()})
        _busy = True
        try:
            store = get_store()
            result = run_ops(store.get, store.set, params["op"], params["n"], params["concurrency"],
                             params["duration"], params["start_at"], params["prefix"], params["keys"],
                             params["value_bytes"])
        except ValueError as exc:
            return _json(start_response, "400 Bad Request", {"error": str(exc)})
        finally:
            _busy = False
        return _json(start_response, "200 OK", result)
    return _json(start_response, "200 OK", {"pid": os.getpid()})


def peer_main(argv: list[str]) -> None:
    """The peer process: redis-py straight to redis-server, commands on stdin."""
    from gevent import monkey

    monkey.patch_all()
    import redis  # after patching: its sockets and locks are gevent's

    url = argv[argv.index("--peer") + 1]
    client = redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0)

    def get(key: str) -> Any:
        text = client.get(key)
        return None if text is None else json.loads(text)

    def put(key: str, value: Any) -> None:
        client.set(key, json.dumps(value, separators=(",", ":")))

    client.ping()
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        params = {**DEFAULTS, **command}
        if command["cmd"] == "fill":
            answer = fill(put, params["prefix"], params["keys"], params["value_bytes"])
        elif command["cmd"] == "run":
            answer = run_ops(get, put, params["op"], params["n"], params["concurrency"], params["duration"],
                             params["start_at"], params["prefix"], params["keys"], params["value_bytes"])
        else:
            break
        print(json.dumps(answer), flush=True)
    client.close()


if __name__ == "__main__":
    if "--peer" not in sys.argv:
        sys.exit("usage: python -m bench.store_app --peer redis://127.0.0.1:PORT/DB")
    peer_main(sys.argv)
