"""The socket.io app every Python server of the peer benchmark runs (same logic as bench/js/node_server.mjs).

BENCH_MANAGER picks the client manager: "barrel" (BarrelManager, with
example_confs/barrel_conf.py), "plain" (python-socketio's default, -k gevent -w 1)
or "redis" (RedisManager at BENCH_REDIS_URL, -k gevent -w 2).

Events: on connect the server sends "hi" {pid}; "blast" {rate, seconds, tag} makes
this worker emit `rate` 100-byte broadcasts "b" a second for `seconds`, each with
its send time; "hop_*" measure the cross-worker bus hop (bench/peers/bus_hop.py).
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import socketio

MANAGER = os.environ.get("BENCH_MANAGER", "plain")
# The data of one broadcast is 100 bytes of compact JSON (the time stamp's width varies by a byte or two).
PAD = "x" * (100 - len(json.dumps({"t": time.time() * 1000, "tag": 0, "pad": ""}, separators=(",", ":"))))


def _manager() -> Any:
    if MANAGER == "barrel":
        from gunicorn_barrel import BarrelManager

        return BarrelManager()
    if MANAGER == "redis":
        return socketio.RedisManager(os.environ["BENCH_REDIS_URL"])
    return None


sio = socketio.Server(async_mode="gevent", client_manager=_manager())


@sio.event
def connect(sid: str, _environ: dict[str, Any], _auth: Any = None) -> None:
    sio.emit("hi", {"pid": os.getpid()}, to=sid)


@sio.event
def whoami(sid: str, _data: Any = None) -> dict[str, Any]:
    return {"pid": os.getpid(), "sid": sid}


@sio.event
def blast(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    """Emit the broadcasts (runs in its own greenlet: python-socketio's async handlers)."""
    rate, total, tag = float(data["rate"]), round(data["rate"] * data["seconds"]), data["tag"]
    start, sent = time.monotonic(), 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            sio.emit("b", {"t": time.time() * 1000, "tag": tag, "pad": PAD})
            sent += 1
        if sent < total:  # no wait after the last one: the elapsed time is the sending's
            gevent.sleep(max(0.0, start + sent / rate - time.monotonic()))
    return {"sent": sent, "elapsed": time.monotonic() - start, "pid": os.getpid()}


if MANAGER == "barrel":
    from bench.peers import hop_handlers

    hop_handlers.register(sio)

if os.environ.get("BENCH_MEMORY_PROBE"):  # python -m bench.memory_breakdown
    from bench.peers import memory_probe

    memory_probe.start()
    sio.on("memory_probe", lambda _sid, action: memory_probe.probe(action))


def plain_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"plain route from {os.getpid()}".encode()]


wsgi = socketio.WSGIApp(sio, plain_wsgi)
