"""Live CPU and memory of the gunicorn workers and of the machine, plotted with Flot.

From the repository root::

    npm ci                  # once: socket.io-client, jquery and flot, into node_modules/
    gunicorn -c example_confs/barrel_conf.py -w 4 -b 127.0.0.1:8000 demos.rtmonitor.app:wsgi

then open http://127.0.0.1:8000/ (add ``?transport=polling`` to force
long-polling, ``?transport=websocket`` to force WebSocket; by default the page
polls first, then upgrades to WebSocket).

One sampler for all workers
    Every worker runs the same loop once a second, but only the worker holding
    the store key ``rtmonitor:leader`` samples. A worker takes the key with
    ``compare_and_set(key, None, me, ttl=3)`` when nobody holds it; the
    leader renews it with ``compare_and_set(key, me, me, ttl=3)`` each second
    and samples only after a successful renewal. When the leader's worker dies
    the key expires and another worker takes over within about 4 s; a leader
    that was stalled past the ttl fails its renewal and stops sampling. The
    ttl is 3 s unless the environment variable RTMONITOR_LEADER_TTL says otherwise.

What is sampled (psutil, in the leader only)
    The workers are the arbiter's children (``os.getppid()`` of any worker)
    minus its side processes (barrel's and any declared in the config), which
    run in process groups of their own.
    Per worker: CPU in percent of the whole machine (100 = every core busy)
    and RSS in bytes. Total: the machine's CPU percent and its memory in use
    (total - available), with the machine's memory size and CPU count.

One point a second, the same for every client
    The leader numbers each point with ``incr("rtmonitor:seq")`` (numbers go
    on across leader changes), keeps it in the store under
    ``rtmonitor:point:<seq>`` for about a minute, then broadcasts it with
    ``sio.emit("sample", point)``; BarrelManager delivers it to the clients of
    every worker. A client that connects gets the last points from the store
    at once (event ``history``). Points are keyed by ``seq``, so a point
    received both in the history and live is counted once. A point that
    could not be stored (the store slow or restarting) is still broadcast;
    a client that sees a hole in the seqs it got live asks for the kept
    points (``fill``) and adds the missing ones: what one path lost, the
    other brings.

    point = {"seq": int, "t": unix time (s), "sampler": leader pid,
             "total": {"cpu": %, "mem": bytes in use, "mem_total": bytes, "ncpu": int},
             "workers": {"<pid>": {"cpu": % of the machine, "mem": RSS bytes}, ...}}

Events (server -> client)
    history {"pid": worker holding this socket, "leader": leader id or null,
             "points": [point, ...] (oldest first)}     sent on connect
    sample  point                                      once a second, to everyone
Events (client -> server)
    fill    -> {"points": [point, ...]} (its ack)      the kept points, as in history
HTTP
    /api/leader   {"leader": {"pid", "host", "token"} or null, "served_by": pid}
    /api/history  {"points": [...]} as sent on connect

Background work starts lazily in each worker, never in the arbiter: at import
when the app is loaded in a gevent-patched barrel worker (the default), and
otherwise (``--preload`` imports the app in the arbiter, which must not run
it) on the worker's first request.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import gevent
import psutil
import socketio
from gevent import monkey

from gunicorn_barrel import BarrelManager, hooks
from gunicorn_barrel.bus import api as bus_client
from gunicorn_barrel.store import Store, StoreError, get_store

# A child of gunicorn's error logger: its messages go where gunicorn logs (--log-level).
log = logging.getLogger("gunicorn.error.rtmonitor")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
STATIC = HERE / "static"
NODE_MODULES = REPO / "node_modules"
# Browser packages installed by `npm ci` from package.json / package-lock.json
# at the repo root, served from there (never copied into the repository).
VENDOR = {
    "/vendor/socket.io.min.js": (
        "socket.io-client", NODE_MODULES / "socket.io-client" / "dist" / "socket.io.min.js",
    ),
    "/vendor/jquery.min.js": ("jquery", NODE_MODULES / "jquery" / "dist" / "jquery.min.js"),
    "/vendor/jquery.flot.js": ("flot", NODE_MODULES / "flot" / "dist" / "es5" / "jquery.flot.js"),
}

INTERVAL = 1.0  # seconds between points
LEADER_KEY = "rtmonitor:leader"
# Seconds a leader keeps the key without renewing it: a worker dead (or stalled)
# that long loses it. RTMONITOR_LEADER_TTL sets it (tests that must keep one
# sampler on a busy machine use a long one).
LEADER_TTL = float(os.environ.get("RTMONITOR_LEADER_TTL", "3"))
SEQ_KEY = "rtmonitor:seq"
POINT_PREFIX = "rtmonitor:point:"
HISTORY = 60  # points a new client gets
POINT_TTL = HISTORY + 5.0
_SEQ_DIGITS = 12  # zero-padded, so the store's key order is the seq order

HOST = socket.gethostname()

sio = socketio.Server(async_mode="gevent", client_manager=BarrelManager())


def in_barrel_worker() -> bool:
    """True in a gunicorn barrel worker (gevent-patched, barrel hooks run); False in the arbiter."""
    return monkey.is_module_patched("socket") and hooks.runtime_dir() is not None


def point_key(seq: int) -> str:
    return f"{POINT_PREFIX}{seq:0{_SEQ_DIGITS}d}"


def history(store: Store) -> list[dict[str, Any]]:
    """The last HISTORY points kept in the store, oldest first."""
    rows = store.scan(POINT_PREFIX, limit=10 * HISTORY)
    return [rows[key] for key in sorted(rows)][-HISTORY:]


def _bus_connected() -> bool:
    """Whether this worker's bus client is up (from post_worker_init to worker_exit)."""
    return bus_client.port.connected() is not None


def _is_side_process(proc: psutil.Process) -> bool:
    """Side processes run in process groups of their own; workers stay in the arbiter's.

    Barrel's are also exec'd as `python -m gunicorn_barrel.<module>` (for the
    instant between their fork and their own group).
    """
    try:
        args = proc.cmdline()
        own_group = os.getpgid(proc.pid) != os.getpgrp()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ProcessLookupError):
        return True  # gone, or not ours to look at: not a worker to plot
    return own_group or any(a == "-m" and b.startswith("gunicorn_barrel.")
                            for a, b in zip(args, args[1:], strict=False))


class Sampler:
    """Runs in every worker; only the elected leader samples and broadcasts."""

    def __init__(self) -> None:
        self.pid: int | None = None  # the process this sampler's loop runs in
        self.me: dict[str, Any] = {}
        self.leading = False
        self.greenlet: gevent.Greenlet | None = None
        self._procs: dict[int, psutil.Process] = {}
        self._side: set[int] = set()

    def ensure_started(self) -> None:
        """Start this worker's loop once (cheap to call on every request); never in the arbiter."""
        pid = os.getpid()
        if self.pid == pid or not in_barrel_worker():
            return
        self.pid = pid
        self.me = {"pid": pid, "host": HOST, "token": secrets.token_hex(8)}
        self.leading = False
        self._procs, self._side = {}, set()
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        next_at = time.monotonic()
        connected_once = False
        while True:
            if _bus_connected():
                connected_once = True
                try:
                    self.tick()
                except Exception as exc:
                    if not _bus_connected():
                        continue  # worker_exit closed the bus during the tick: stop (below)
                    if isinstance(exc, StoreError):
                        # No answer from the store: try again next tick (a leader
                        # that cannot renew loses the key when its ttl runs out).
                        log.warning("rtmonitor (pid %s): %s", self.pid, exc)
                    else:
                        log.exception("rtmonitor (pid %s): tick failed", self.pid)
            elif connected_once:
                # worker_exit closed the bus and the store: this worker is
                # exiting. Stop; the leader key expires and another worker takes over.
                log.info("rtmonitor: worker %s exiting, its sampler loop stops", self.pid)
                return
            # else: the bus is not connected yet (post_worker_init has not run)
            next_at += INTERVAL
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (a stall): skip, never catch up in a burst
                next_at, delay = time.monotonic(), 0.0
            gevent.sleep(delay)

    def tick(self) -> None:
        store = get_store()
        if self.leading:
            if store.compare_and_set(LEADER_KEY, self.me, self.me, ttl=LEADER_TTL):
                self.sample(store)
            else:
                self.leading = False
                log.info("rtmonitor: worker %s is no longer the sampler", self.pid)
        elif store.compare_and_set(LEADER_KEY, None, self.me, ttl=LEADER_TTL):
            self.leading = True
            log.info("rtmonitor: worker %s is the sampler", self.pid)
            # psutil's CPU percentages compare with the previous call: make
            # one now, so the first point (next tick) covers a whole interval.
            psutil.cpu_percent(None)
            self._workers()

    def sample(self, store: Store) -> dict[str, Any]:
        vm = psutil.virtual_memory()
        total = {
            "cpu": round(psutil.cpu_percent(None), 2),
            "mem": int(vm.total - vm.available),
            "mem_total": int(vm.total),
            "ncpu": psutil.cpu_count() or 1,
        }
        workers = self._workers()
        seq = store.incr(SEQ_KEY)
        point = {"seq": seq, "t": round(time.time(), 3), "sampler": self.pid,
                 "total": total, "workers": workers}
        # Stored before it is sent: a client connecting in between gets it in
        # its history and live, and counts it once (by seq). Sent even if it
        # could not be stored: the seq is taken, and live clients lose nothing.
        try:
            store.set(point_key(seq), point, ttl=POINT_TTL)
        finally:
            sio.emit("sample", point)
        return point

    def _workers(self) -> dict[str, dict[str, float]]:
        """CPU (% of the machine) and RSS of each worker: the arbiter's children but side processes."""
        ncpu = psutil.cpu_count() or 1
        children = psutil.Process(os.getppid()).children()
        alive = {c.pid for c in children}
        self._procs = {pid: p for pid, p in self._procs.items() if pid in alive}
        self._side &= alive
        stats: dict[str, dict[str, float]] = {}
        for child in children:
            if child.pid in self._side:
                continue
            proc = self._procs.get(child.pid)
            if proc is None:
                if _is_side_process(child):
                    self._side.add(child.pid)
                    continue
                proc = self._procs[child.pid] = child
            try:
                with proc.oneshot():
                    cpu = proc.cpu_percent(None) / ncpu
                    rss = proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                self._procs.pop(child.pid, None)
                continue
            stats[str(child.pid)] = {"cpu": round(cpu, 2), "mem": int(rss)}
        return stats


sampler = Sampler()
if in_barrel_worker():
    # Loaded in a worker (no --preload): start now rather than at the first
    # request, so every worker can take over as the sampler. The loop runs
    # once the worker serves (after post_worker_init has connected the bus).
    sampler.ensure_started()


@sio.event
def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    sampler.ensure_started()
    try:
        store = get_store()
        points, leader = history(store), store.get(LEADER_KEY)
    except StoreError as exc:
        log.warning("rtmonitor: no history for %s: %s", sid, exc)
        points, leader = [], None
    sio.emit("history", {"pid": os.getpid(), "leader": leader, "points": points}, to=sid)


@sio.on("fill")
def fill(sid: str, _data: Any = None) -> dict[str, Any]:
    """The kept points, for a client that saw a hole in the live ones."""
    try:
        return {"points": history(get_store())}
    except StoreError as exc:
        log.warning("rtmonitor: no points to fill %s's hole: %s", sid, exc)
        return {"points": []}


StartResponse = Callable[..., Any]


def fallback(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """Whatever socket.io and the static files do not answer."""
    path = environ.get("PATH_INFO") or "/"
    if path == "/ready-check":
        return _text(start_response, "200 OK", "ready\n")
    if path == "/favicon.ico":
        return _reply(start_response, "204 No Content", "image/x-icon", b"")
    if path == "/api/leader":
        try:
            leader = get_store().get(LEADER_KEY)
        except StoreError as exc:
            return _json(start_response, "503 Service Unavailable", {"error": str(exc)})
        return _json(start_response, "200 OK", {"leader": leader, "served_by": os.getpid()})
    if path == "/api/history":
        try:
            points = history(get_store())
        except StoreError as exc:
            return _json(start_response, "503 Service Unavailable", {"error": str(exc)})
        return _json(start_response, "200 OK", {"points": points})
    if path in VENDOR:
        # static_files only serves files that exist: this is node_modules missing.
        package, filename = VENDOR[path]
        return _text(
            start_response, "404 Not Found",
            f"{path} comes from the npm package {package}, which is not installed: "
            f"run `npm ci` in {REPO} (looked for {filename}).\n",
        )
    return _text(start_response, "404 Not Found", "Not Found\n")


def _text(start_response: StartResponse, status: str, body: str) -> list[bytes]:
    return _reply(start_response, status, "text/plain; charset=utf-8", body.encode())


def _json(start_response: StartResponse, status: str, data: Any) -> list[bytes]:
    return _reply(start_response, status, "application/json", json.dumps(data).encode())


def _reply(start_response: StartResponse, status: str, content_type: str, data: bytes) -> list[bytes]:
    start_response(status, [
        ("Content-Type", content_type), ("Content-Length", str(len(data))), ("Cache-Control", "no-store"),
    ])
    return [data]


_JS = "text/javascript; charset=utf-8"
static_files = {
    "/": {"content_type": "text/html; charset=utf-8", "filename": str(STATIC / "index.html")},
    "/rtmonitor.js": {"content_type": _JS, "filename": str(STATIC / "rtmonitor.js")},
    **{path: {"content_type": _JS, "filename": str(filename)} for path, (_, filename) in VENDOR.items()},
}

app = socketio.WSGIApp(sio, fallback, static_files=static_files)


def wsgi(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The app gunicorn serves: socket.io, the page, the API; starts this worker's sampler loop."""
    sampler.ensure_started()
    return app(environ, start_response)
