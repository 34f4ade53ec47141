"""The embedded store process killed under calls: each call is sent again and applied once.

Real gunicorn -w 4, real store process SIGKILLed (the supervisor restarts
it) while every worker runs incrs from 10 greenlets. Every incr must return
(no StoreTimeout: the caller waits about the restart, not store_timeout), be
applied exactly once (the answers are 1..N, each once), and the counter must
end at N. Then the 64-bit limit of incr, which used to kill the store.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gunicorn_barrel.store.embedded.db import KeyValueDB
from gunicorn_barrel.store.embedded.server import run_request
from tests.harness import Client, Gunicorn, gunicorn, spread_clients, wait_for

WORKERS = 4
PER_WORKER = 6000
KILLS = 3


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    with gunicorn(app="tests.apps.probe_app:wsgi", workers=WORKERS) as srv:
        yield srv


def _value(client: Client, key: str) -> Any:
    reply = client.call("store_op", {"op": "get", "args": [key, 0]}, timeout=30)
    assert "error" not in reply, reply
    return reply["result"]


def _ready_store_pid(srv: Gunicorn, old: int | None) -> int:
    """The store pid once a store other than ``old`` runs and has marked itself ready."""
    def ready() -> int | None:
        pids = [p for p in srv.store_pids() if p != old]
        if not pids:
            return None
        path = Path(srv.runtime_dir()) / "store.ready"
        return pids[0] if path.exists() and path.read_text().strip() == str(pids[0]) else None

    return int(wait_for(ready, 15, "a store process ready"))


@pytest.mark.integration
def test_calls_in_flight_when_the_store_dies_are_sent_again_and_applied_once(server: Gunicorn) -> None:
    clients = spread_clients(server.url, WORKERS, per_worker=1)
    per_worker = list({c.pid: c for c in clients}.values())
    watcher = clients[-1]
    key = "restart:" + uuid.uuid4().hex
    results: list[Any] = [None] * WORKERS
    took: list[float] = [0.0] * WORKERS

    def run(i: int) -> None:
        start = time.monotonic()
        results[i] = per_worker[i].call("store_incr_logged", {"key": key, "times": PER_WORKER}, timeout=300)
        took[i] = time.monotonic() - start

    threads = [threading.Thread(target=run, args=(i,)) for i in range(WORKERS)]
    try:
        for t in threads:
            t.start()
        store = _ready_store_pid(server, None)
        for kill in range(KILLS):
            # Kill while the incrs run: wait until the counter moved on since the last restart.
            mark = _value(watcher, key)
            wait_for(lambda mark=mark: _value(watcher, key) > mark + 500, 60, f"incrs before kill {kill}")
            os.kill(store, signal.SIGKILL)
            store = _ready_store_pid(server, store)
        for t in threads:
            t.join(300)
        assert all(r is not None for r in results), "a worker's incrs did not finish"
    finally:
        for c in clients:
            c.close()
    errors = [e for r in results for e in r["errors"]]
    assert not errors, f"{len(errors)} incrs failed, e.g. {errors[:3]}"
    answers = sorted(n for r in results for n in r["answers"])
    total = WORKERS * PER_WORKER
    assert answers == list(range(1, total + 1)), (
        f"{len(answers)} answers, {len(set(answers))} distinct, max {answers[-1]}: "
        "an incr applied twice or lost")
    resent = sum(r["resent"] for r in results)
    longest = max(r["longest_call"] for r in results)
    print(f"requests resent: {resent}; longest incr: {longest:.2f} s; "
          f"seconds per worker: {[round(t, 1) for t in took]}")
    assert resent > 0, "no call was in flight at any of the kills: the test did not test"
    assert server.log().count("barrel store (pid: ") >= KILLS


@pytest.mark.integration
def test_incr_past_64_bits_is_refused_and_harms_nothing(server: Gunicorn) -> None:
    clients = spread_clients(server.url, 2, per_worker=1)
    a, b = clients[0], clients[-1]
    store = server.store_pids()[0]
    key = "big:" + uuid.uuid4().hex
    try:
        assert a.call("store_watch", {"prefix": key}, timeout=10)["pid"] == a.pid

        def op(client: Client, name: str, *args: Any) -> Any:
            return client.call("store_op", {"op": name, "args": list(args)}, timeout=30)

        assert op(b, "set", key, 2**63 - 2) == {"result": None, "pid": b.pid}
        assert op(b, "incr", key)["result"] == 2**63 - 1
        for args in ((key,), (key, -(2**64)), (key + ":other", 2**64)):
            reply = op(b, "incr", *args)
            assert reply.get("error") == "StoreValueError", reply
            assert "64 bits" in reply["message"]
        assert op(b, "incr", key, -1)["result"] == 2**63 - 2  # the counter still works
        assert op(b, "set", key, 2**70)["result"] is None  # JSON allows it; incr refuses it
        assert op(b, "incr", key).get("error") == "StoreValueError"
        assert server.store_pids() == [store], "the store process died"

        def seen() -> list[Any]:
            return list(a.call("store_watched", {"prefix": key}, timeout=10)["changes"])

        expected = [["set", key, 2**63 - 2], ["set", key, 2**63 - 1], ["set", key, 2**63 - 2],
                    ["set", key, 2**70]]
        wait_for(lambda: seen() == expected, 10, f"the watcher to see every change ({seen()})")
    finally:
        for c in clients:
            c.close()


def _request(op: str, request_id: int, **fields: Any) -> dict[str, Any]:
    return {"op": op, "id": request_id, "client": b"c" * 16, "keep": 5.0, **fields}


@pytest.mark.parametrize("durability", ["process", "power"])
def test_a_write_sent_again_after_a_restart_is_applied_once(tmp_path: Path, durability: str) -> None:
    path = str(tmp_path / "store.sqlite3")
    db = KeyValueDB(path, durability, 65536)
    db.db.execute("BEGIN IMMEDIATE")
    first = run_request(db, _request("incr", 1, key="n", amount=7))
    db.db.execute("COMMIT")
    assert first == {"ok": True, "result": 7}
    # A store process that crashed after that commit; its successor gets the request again.
    db.db.close()
    db = KeyValueDB(path, durability, 65536)
    assert run_request(db, _request("incr", 1, key="n", amount=7)) == first
    assert run_request(db, _request("incr", 2, key="n", amount=7)) == {"ok": True, "result": 14}
    assert run_request(db, _request("incr", 2, key="n", amount=7)) == {"ok": True, "result": 14}
    assert run_request(db, {"op": "get", "id": 3, "key": "n"})["result"]["value"] == "14"
    assert run_request(db, _request("compare_and_set", 5, key="n", expected="14", value="0", ttl=None)) \
        == {"ok": True, "result": True}
    assert run_request(db, _request("compare_and_set", 5, key="n", expected="14", value="0", ttl=None)) \
        == {"ok": True, "result": True}  # its answer again, not False (the value is 0 now)
    # Rolled back (a crash before the commit): nothing applied, nothing remembered.
    db.db.execute("BEGIN IMMEDIATE")
    run_request(db, _request("incr", 4, key="n", amount=1))
    db.db.execute("ROLLBACK")
    assert run_request(db, _request("incr", 4, key="n", amount=1)) == {"ok": True, "result": 1}
    db.db.close()


def test_records_of_applied_writes_go_when_nobody_waits_for_them(tmp_path: Path) -> None:
    path = str(tmp_path / "store.sqlite3")
    db = KeyValueDB(path, "process", 65536)
    run_request(db, {**_request("set", 1, key="a", value="1", ttl=None), "keep": 0.0})
    run_request(db, {**_request("set", 2, key="b", value="2", ttl=None), "keep": 600.0})
    rows = db.db.execute("SELECT id, expires FROM applied ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [1, 2]
    db.db.execute("UPDATE applied SET expires = 0 WHERE id = 1")  # as if its keep had passed
    db.sweep()
    assert [r[0] for r in db.db.execute("SELECT id FROM applied")] == [2]
    db.db.close()
    assert sqlite3.connect(path).execute("SELECT count(*) FROM kv").fetchone()[0] == 2
