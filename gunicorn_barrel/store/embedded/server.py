"""The embedded store's side process: SQLite behind a zeromq ROUTER, changes on the bus.

Started by the arbiter's supervisor as ``python -m gunicorn_barrel.store.embedded.server``.
Workers send requests (msgpack maps with an ``id``) from DEALER sockets; the
server takes every request waiting, runs the batch in one SQLite transaction,
commits, then answers each, then publishes each change on the bus channel
``store`` (with the bus's exactly-once, in-order delivery). A write is
acknowledged only after its commit, so a crash loses no acknowledged write.
One process, one transaction at a time: incr and compare-and-set are atomic.
"""
from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import gevent
import msgpack
import zmq.green as zmq

from gunicorn_barrel.bus import channels
from gunicorn_barrel.bus.zeromq.client import BusClient
from gunicorn_barrel.config import arguments
from gunicorn_barrel.config.settings import STORE_SERVER
from gunicorn_barrel.metrics import catalog, recorder, snapshots
from gunicorn_barrel.runtime import endpoints, logs
from gunicorn_barrel.runtime.lifeline import signal_when_parent_dies
from gunicorn_barrel.store.base import StoreValueError
from gunicorn_barrel.store.embedded.db import OPS, KeyValueDB, write_identity

log = logging.getLogger("gunicorn_barrel.store")

_BATCH = 1000
_SWEEP_EVERY = 1.0
_REQUESTS = catalog.metric("barrel_store_server_requests_total")


def run_request(db: KeyValueDB, request: Any) -> dict[str, Any]:
    """One request to one answer; never raises for bad input. A write sent again is not applied again."""
    if not isinstance(request, dict) or request.get("op") not in OPS:
        return {"ok": False, "kind": "value", "error": "not a store request"}
    op = request["op"]
    identity = write_identity(request)
    if identity is not None:
        done, result = db.applied(*identity[:2])
        if done:
            return {"ok": True, "result": result}
    try:
        result = getattr(db, op)(*(request.get(name) for name in OPS[op]))
    except StoreValueError as exc:
        return {"ok": False, "kind": "value", "error": str(exc)}
    except (TypeError, ValueError) as exc:
        return {"ok": False, "kind": "value", "error": f"bad {op} request: {exc}"}
    if identity is not None:
        client, request_id, keep = identity
        db.remember(client, request_id, result, keep)
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
        self.metrics = snapshots.Writer(runtime_dir, catalog.STORE, recorder.process())
        self._batch_time = recorder.process().histogram(
            catalog.metric("barrel_store_server_batch_duration_seconds"))

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
                self._write_metrics()

    def _write_metrics(self) -> None:
        rec = recorder.process()
        rec.copy_counters(self.bus.counters, catalog.STORE)
        rec.series(catalog.metric("barrel_bus_unacked_frames")).value = self.bus.outbox.unacked_count()
        self.metrics.write(time.monotonic())

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
        started = time.perf_counter()
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
        if batch:
            self._batch_time.observe(time.perf_counter() - started)
        for identity, answer in answers:
            if answer is not None:
                self.router.send_multipart([identity, _pack(answer)])
        for change in self.db.changes:
            self.bus.publish(channels.STORE_CHANGES, change)
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
        op = request.get("op")
        known = op if isinstance(op, str) and op in OPS else "invalid"
        recorder.process().series(_REQUESTS, known).value += 1
        answer["id"] = request["id"]
        return answer


def _pack(answer: dict[str, Any]) -> bytes:
    # After COMMIT nothing may raise: the rest of the batch still needs its
    # answers and its changes published. (incr refuses results past 64 bits,
    # so this is only a safety net.)
    try:
        return msgpack.packb(answer, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        log.error("store: answer to request %s cannot be encoded: %s", answer.get("id"), exc)
        return msgpack.packb({"id": answer.get("id"), "ok": False,
                              "error": f"the store could not encode its answer: {exc}"}, use_bin_type=True)


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments.parser("gunicorn_barrel.store.embedded.server", STORE_SERVER).parse_args(argv)
    logs.side_process_logging()  # into gunicorn's error log, through the supervisor
    if not signal_when_parent_dies(args.parent_pid):
        raise SystemExit("store: the arbiter is already gone")
    for name in ("SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH", "SIGTTIN", "SIGTTOU"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    db = KeyValueDB(args.store_path, args.store_durability, args.store_max_value)
    bus = BusClient(args.runtime_dir, args.max_frame_size)
    server = StoreServer(db, args.runtime_dir, bus)

    def stop() -> None:
        server.stopping = True

    gevent.signal_handler(signal.SIGTERM, stop)
    gevent.signal_handler(signal.SIGINT, stop)
    watchdog = gevent.spawn(_watch_parent, args.parent_pid, server)
    endpoints.mark_ready(args.runtime_dir, os.getpid(), "store")
    server._write_metrics()  # the status command sees it at once
    log.info("store %s ready: %s (%s keys)", os.getpid(), args.store_path,
             db.db.execute("SELECT count(*) FROM kv").fetchone()[0])
    try:
        server.serve()
        _flush_changes(bus)
    finally:
        watchdog.kill()
        server.metrics.remove()
        server.router.close()
        bus.close()
        db.db.close()
        log.info("store %s stopped", os.getpid())
        endpoints.remove_if_orphaned(args.runtime_dir, args.parent_pid)


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
