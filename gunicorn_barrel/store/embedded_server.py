"""The embedded store's side process: SQLite behind a zeromq ROUTER, changes on the bus.

Started by the arbiter's supervisor as ``python -m gunicorn_barrel.store.embedded_server``.
Workers send requests (msgpack maps with an ``id``) from DEALER sockets; the
server takes every request waiting, runs the batch in one SQLite transaction,
commits, then answers each, then publishes each change on the bus channel
``store`` (with the bus's exactly-once, in-order delivery). A write is
acknowledged only after its commit, so a crash loses no acknowledged write.
One process, one transaction at a time: incr and compare-and-set are atomic.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import Any

import gevent
import msgpack
import zmq.green as zmq

from gunicorn_barrel.bus import endpoints
from gunicorn_barrel.bus.client import BusClient
from gunicorn_barrel.lifeline import signal_when_parent_dies
from gunicorn_barrel.store.base import (
    StoreValueError,
    check_key,
    check_ttl,
    encode_value,
)

log = logging.getLogger("gunicorn_barrel.store")

CHANGES_CHANNEL = "store"
_BATCH = 1000
_SWEEP_EVERY = 1.0


class KeyValueDB:
    """The SQLite side: every operation of the store API, on one connection."""

    def __init__(self, path: str, durability: str, max_value: int) -> None:
        self.max_value = max_value
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=" + ("FULL" if durability == "power" else "NORMAL"))
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
            "expires REAL, version INTEGER NOT NULL)"
        )
        self.version = self.db.execute("SELECT coalesce(max(version), 0) FROM kv").fetchone()[0]
        self.changes: list[dict[str, Any]] = []

    def _row(self, key: str) -> tuple[str, int] | None:
        row = self.db.execute("SELECT value, expires FROM kv WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        if row[1] is not None and row[1] <= time.time():
            self._remove(key, "expire")
            return None
        return row[0], row[1]

    def _write(self, key: str, text: str, ttl: float | None) -> None:
        self.version += 1
        expires = time.time() + ttl if ttl is not None else None
        self.db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?, ?)", (key, text, expires, self.version))
        self.changes.append({"op": "set", "key": key, "value": text, "version": self.version})

    def _remove(self, key: str, op: str) -> bool:
        if self.db.execute("DELETE FROM kv WHERE key = ?", (key,)).rowcount == 0:
            return False
        self.version += 1
        self.changes.append({"op": op, "key": key, "value": None, "version": self.version})
        return True

    def get(self, key: str) -> Any:
        row = self._row(check_key(key))
        return {"found": row is not None, "value": row[0] if row else None}

    def set(self, key: str, value: str, ttl: float | None) -> Any:
        text = encode_value(json.loads(value), self.max_value)
        self._write(check_key(key), text, check_ttl(ttl))
        return True

    def delete(self, key: str) -> Any:
        return self._remove(check_key(key), "delete")

    def incr(self, key: str, amount: int) -> Any:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise StoreValueError(f"incr amount must be an integer, got {amount!r}")
        row = self._row(check_key(key))
        current = json.loads(row[0]) if row else 0
        if isinstance(current, bool) or not isinstance(current, int):
            raise StoreValueError(f"incr needs an integer value at {key!r}")
        self._write(key, json.dumps(current + amount), None if row is None or row[1] is None
                    else max(row[1] - time.time(), 0.001))
        return current + amount

    def compare_and_set(self, key: str, expected: str, value: str, ttl: float | None) -> Any:
        row = self._row(check_key(key))
        wanted = json.loads(expected)
        if wanted is None:  # None means "absent": a stored null is not absent
            if row is not None:
                return False
        elif row is None or _canonical(wanted) != _canonical(json.loads(row[0])):
            return False
        self._write(key, encode_value(json.loads(value), self.max_value), check_ttl(ttl))
        return True

    def scan(self, prefix: str, limit: int) -> Any:
        if not isinstance(prefix, str) or not isinstance(limit, int) or not 0 < limit <= 100_000:
            raise StoreValueError("scan needs a string prefix and a limit in 1..100000")
        rows = self.db.execute(
            "SELECT key, value FROM kv WHERE substr(key, 1, ?) = ? AND (expires IS NULL OR expires > ?) "
            "ORDER BY key LIMIT ?", (len(prefix), prefix, time.time(), limit),
        ).fetchall()
        return dict(rows)

    def sweep(self) -> None:
        """Remove expired keys (each an "expire" change)."""
        for (key,) in self.db.execute("SELECT key FROM kv WHERE expires <= ?", (time.time(),)).fetchall():
            self._remove(key, "expire")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


_OPS = {
    "get": ("key",),
    "set": ("key", "value", "ttl"),
    "delete": ("key",),
    "incr": ("key", "amount"),
    "compare_and_set": ("key", "expected", "value", "ttl"),
    "scan": ("prefix", "limit"),
}


def run_request(db: KeyValueDB, request: Any) -> dict[str, Any]:
    """One request to one answer; never raises for bad input."""
    if not isinstance(request, dict) or request.get("op") not in _OPS:
        return {"ok": False, "kind": "value", "error": "not a store request"}
    op = request["op"]
    try:
        result = getattr(db, op)(*(request.get(name) for name in _OPS[op]))
    except StoreValueError as exc:
        return {"ok": False, "kind": "value", "error": str(exc)}
    except (TypeError, ValueError) as exc:
        return {"ok": False, "kind": "value", "error": f"bad {op} request: {exc}"}
    return {"ok": True, "result": result}


class StoreServer:
    """The request loop: batch, transaction, commit, answer, publish."""

    def __init__(self, db: KeyValueDB, runtime_dir: str, bus: BusClient) -> None:
        self.db = db
        self.bus = bus
        self.router = bus._ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, 4 * 1024 * 1024 + db.max_value)
        self.router.bind(endpoints.store_endpoint(runtime_dir))
        self.stopping = False

    def serve(self) -> None:
        next_sweep = time.monotonic() + _SWEEP_EVERY
        while not self.stopping:
            batch: list[list[bytes]] = []
            with gevent.Timeout(_SWEEP_EVERY, False):  # only the wait is bounded, never a batch
                batch = [self.router.recv_multipart()]
            if batch:
                batch.extend(self._drain())
                self._run(batch)
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + _SWEEP_EVERY
                self._run([])

    def _drain(self) -> list[list[bytes]]:
        more = []
        for _ in range(_BATCH):
            try:
                more.append(self.router.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
        return more

    def _run(self, batch: list[list[bytes]]) -> None:
        answers = []
        self.db.db.execute("BEGIN IMMEDIATE")
        try:
            if not batch:
                self.db.sweep()
            for parts in batch:
                answers.append((parts[0], self._answer(parts)))
            self.db.db.execute("COMMIT")
        except BaseException:
            self.db.db.execute("ROLLBACK")
            self.db.changes.clear()
            raise
        for identity, answer in answers:
            if answer is not None:
                self.router.send_multipart([identity, msgpack.packb(answer, use_bin_type=True)])
        for change in self.db.changes:
            self.bus.publish(CHANGES_CHANNEL, change)
        self.db.changes.clear()

    def _answer(self, parts: list[bytes]) -> dict[str, Any] | None:
        try:
            request = msgpack.unpackb(parts[-1], raw=False) if len(parts) == 2 else None
        except (ValueError, TypeError, msgpack.UnpackException):
            request = None
        if not isinstance(request, dict) or not isinstance(request.get("id"), int):
            log.warning("store: malformed request refused")
            return None
        answer = run_request(self.db, request)
        answer["id"] = request["id"]
        return answer


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gunicorn_barrel.store.embedded_server")
    parser.add_argument("--runtime-dir", required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--durability", choices=("process", "power"), required=True)
    parser.add_argument("--max-value", type=int, required=True)
    parser.add_argument("--max-frame-size", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    if not signal_when_parent_dies(args.parent_pid):
        raise SystemExit("store: the arbiter is already gone")
    for name in ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGTTIN", "SIGTTOU"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    db = KeyValueDB(args.path, args.durability, args.max_value)
    bus = BusClient(args.runtime_dir, args.max_frame_size)
    server = StoreServer(db, args.runtime_dir, bus)

    def stop() -> None:
        server.stopping = True

    gevent.signal_handler(signal.SIGTERM, stop)
    gevent.signal_handler(signal.SIGINT, stop)
    watchdog = gevent.spawn(_watch_parent, args.parent_pid, server)
    endpoints.mark_ready(args.runtime_dir, os.getpid(), "store")
    log.info("store %s ready: %s (%s keys)", os.getpid(), args.path,
             db.db.execute("SELECT count(*) FROM kv").fetchone()[0])
    try:
        server.serve()
        _flush_changes(bus)
    finally:
        watchdog.kill()
        server.router.close()
        bus.close()
        db.db.close()
        log.info("store %s stopped", os.getpid())


def _flush_changes(bus: BusClient, timeout: float = 2.0) -> None:
    """Give the broadcaster a moment to acknowledge the last changes."""
    deadline = time.monotonic() + timeout
    while bus.outbox.unacked_count() and time.monotonic() < deadline:
        gevent.sleep(0.02)


def _watch_parent(parent_pid: int, server: StoreServer) -> None:
    while os.getppid() == parent_pid:
        gevent.sleep(0.25)
    log.warning("arbiter %s is gone; store exiting", parent_pid)
    server.stopping = True


if __name__ == "__main__":
    main()
