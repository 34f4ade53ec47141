"""The shared store on Redis under real gunicorn -w 4: the checks of test_store.py, and outages.

Each module run starts its own redis-server on a free loopback port (no
persistence) and stops it by pid. redis-server is required: without it these
tests fail (CI installs it), they are not skipped.
"""
from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Client, Gunicorn, gunicorn, spread_clients, wait_for
from tests.redis_server import RedisServer

# The checks that are the same on both backends run here too, with this
# module's fixtures (a gunicorn on a redis-server of its own).
from tests.test_store import (  # noqa: F401 - collected by pytest with this module's fixtures
    in_parallel,
    op,
    test_bad_input_gets_a_clear_error,
    test_compare_and_set_race_has_one_winner,
    test_incr_from_four_workers_is_atomic,
    test_ttl_expires,
    wait_every_watcher_back,
)

pytestmark = pytest.mark.integration

WORKERS = 4
STORE_TIMEOUT = 1.0


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[Gunicorn]:
    with gunicorn(workers=WORKERS, env={"BARREL_STORE": redis_server.url}) as srv:
        yield srv


def test_basic_operations_across_workers(per_worker: list[Client], redis_server: RedisServer) -> None:
    a, b = per_worker[0], per_worker[1]
    key = "k:" + uuid.uuid4().hex
    assert op(b, "get", key, "absent") == "absent"
    op(a, "set", key, {"n": [1, 2, "é"], "ok": True})
    assert op(b, "get", key) == {"n": [1, 2, "é"], "ok": True}  # another worker reads it
    assert op(a, "get", key) == {"n": [1, 2, "é"], "ok": True}  # a worker reads its own write
    assert op(b, "scan", key[:10]) == {key: {"n": [1, 2, "é"], "ok": True}}
    # Stored under the store's prefix, as canonical JSON text.
    assert redis_server.client.get("barrel:kv:" + key) == b'{"n":[1,2,"\\u00e9"],"ok":true}'
    assert op(b, "delete", key) is True
    assert op(a, "delete", key) is False
    assert op(a, "get", key) is None
    assert redis_server.client.exists("barrel:kv:" + key) == 0


def test_scan_takes_the_prefix_literally(per_worker: list[Client]) -> None:
    base = "g" + uuid.uuid4().hex[:8]
    for i, suffix in enumerate(["*", "*x", "?", "[a]", "\\", "a"]):
        op(per_worker[i % WORKERS], "set", base + suffix, i)
    assert op(per_worker[0], "scan", base + "*") == {base + "*": 0, base + "*x": 1}
    assert op(per_worker[1], "scan", base + "[a") == {base + "[a]": 3}
    assert op(per_worker[2], "scan", base + "\\") == {base + "\\": 4}
    assert list(op(per_worker[3], "scan", base, 3)) == sorted(base + s for s in ["*", "*x", "?", "[a]",
                                                                                  "\\", "a"])[:3]


def test_incr_keeps_the_ttl(per_worker: list[Client], redis_server: RedisServer) -> None:
    key = "ittl:" + uuid.uuid4().hex
    op(per_worker[0], "set", key, 5, 60)
    assert op(per_worker[1], "incr", key, 3) == 8
    assert 0 < redis_server.client.pttl("barrel:kv:" + key) <= 60_000


def test_compare_and_set_compares_json_values(per_worker: list[Client]) -> None:
    a, b = per_worker[0], per_worker[1]
    key = "casv:" + uuid.uuid4().hex
    op(a, "set", key, {"y": 1, "x": [1, {"b": 2, "a": 1}]})
    assert op(b, "compare_and_set", key, {"x": [1, {"a": 1, "b": 2}], "y": 1}, "next") is True
    assert op(a, "compare_and_set", key, "other", "no") is False
    assert op(a, "compare_and_set", key, None, "no") is False  # None: only if absent
    assert op(b, "get", key) == "next"


def test_every_worker_sees_every_change_in_order(per_worker: list[Client]) -> None:
    prefix = "w" + uuid.uuid4().hex[:8] + ":"
    for c in per_worker:
        c.call("store_watch", {"prefix": prefix})
    expected: dict[str, list[list[Any]]] = {}
    for i in range(40):  # writes from every worker, interleaved
        writer = per_worker[i % WORKERS]
        key = prefix + "abc"[i % 3]
        op(writer, "set", key, i)
        expected.setdefault(key, []).append(["set", key, i])
    op(per_worker[0], "delete", prefix + "a")
    expected[prefix + "a"].append(["delete", prefix + "a", None])
    op(per_worker[0], "set", "other:" + prefix, 1)  # not watched

    def seen_all(c: Client) -> bool:
        return len(c.call("store_watched", {"prefix": prefix})["changes"]) == 41

    for c in per_worker:
        wait_for(lambda c=c: seen_all(c), 10, f"changes seen by {c.pid}")
        changes = c.call("store_watched", {"prefix": prefix})["changes"]
        for key, sequence in expected.items():
            assert [ch for ch in changes if ch[1] == key] == sequence
    for c in per_worker:
        assert op(c, "counters")["store_watch_gaps"] == 0


def _timed_failure(client: Client, *call: Any) -> tuple[str, float]:
    started = time.monotonic()
    reply = client.call("store_op", {"op": call[0], "args": list(call[1:])}, timeout=30)
    return reply.get("error", "no error"), time.monotonic() - started


def test_redis_outage_fails_fast_and_recovers() -> None:
    rds = RedisServer()
    try:
        rds.start()
        env = {"BARREL_STORE": rds.url, "BARREL_STORE_TIMEOUT": str(STORE_TIMEOUT)}
        with gunicorn(workers=2, env=env) as srv:
            clients = spread_clients(srv.url, 2, per_worker=1)
            try:
                _outage(rds, list({c.pid: c for c in clients}.values()))
            finally:
                for c in clients:
                    c.close()
    finally:
        rds.stop()


def _outage(rds: RedisServer, clients: list[Client]) -> None:
    prefix = "o" + uuid.uuid4().hex[:8] + ":"
    for c in clients:
        c.call("store_watch", {"prefix": prefix})
    op(clients[0], "set", prefix + "before", 1)
    assert op(clients[1], "incr", "o:count") == 1

    # A hung server (SIGSTOP): calls time out instead of hanging.
    assert rds.proc is not None
    os.kill(rds.proc.pid, signal.SIGSTOP)
    try:
        for call in (("get", prefix + "before"), ("set", prefix + "x", 1), ("incr", "o:count")):
            error, took = _timed_failure(clients[0], *call)
            assert error == "StoreTimeout", (call, error)
            assert took < STORE_TIMEOUT + 1, (call, took)
    finally:
        os.kill(rds.proc.pid, signal.SIGCONT)
    wait_for(lambda: "error" not in clients[0].call("store_op", {"op": "get", "args": ["o:count"]}),
             10, "the store to answer again after SIGCONT")

    # A dead server (SIGKILL): calls fail fast with a clear error.
    rds.kill()
    for c in clients:
        for call in (("get", prefix + "before"), ("set", prefix + "x", 1), ("incr", "o:count"),
                     ("compare_and_set", prefix + "y", None, 1), ("scan", prefix), ("delete", "o:count")):
            error, took = _timed_failure(c, *call)
            assert error in ("StoreUnavailable", "StoreTimeout"), (call, error)
            assert took < STORE_TIMEOUT + 1, (call, took)
    reply = clients[0].call("store_op", {"op": "get", "args": ["o:count"]})
    assert str(rds.port) in reply["message"], reply  # names the server

    # Restarted on the same port (empty: no persistence): calls work again ...
    rds.start()
    wait_for(lambda: "error" not in clients[0].call("store_op", {"op": "incr", "args": ["o:after"]}),
             10, "store calls to work again")
    assert op(clients[1], "incr", "o:after") == 2
    assert op(clients[1], "get", prefix + "before") is None  # that Redis lost its data

    # ... and so do the watchers (changes published while they were away are lost).
    wait_every_watcher_back(clients, prefix, 15, "watchers to get changes after Redis restarted")
    last = op(clients[1], "incr", prefix + "count")
    for c in clients:
        wait_for(lambda c=c: ["set", prefix + "count", last] in c.call(
            "store_watched", {"prefix": prefix})["changes"], 5, f"the last change in {c.pid}")
        assert op(c, "counters")["store_watch_reconnects"] >= 1
