"""The shared store under real gunicorn -w 4: atomicity, watchers, durability, bad input.

Each test drives store calls in chosen workers through socket.io events of
tests/apps/sio_app.py (store_op, store_incr_many, store_cas_race, store_watch).
"""
from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.harness import Client, Gunicorn, gunicorn, spread_clients, wait_for

pytestmark = pytest.mark.integration

WORKERS = 4


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    with gunicorn(workers=WORKERS) as srv:
        yield srv


def op(client: Client, name: str, *args: Any) -> Any:
    reply = client.call("store_op", {"op": name, "args": list(args)}, timeout=30)
    if "error" in reply:
        raise AssertionError(f"{name}{args} failed in {client.pid}: {reply}")
    return reply["result"]


@contextmanager
def watching_workers(store_url: str) -> Iterator[tuple[list[Client], str]]:
    """gunicorn -w 2 on the store at ``store_url`` (2 s timeout): a client on each worker, each
    worker watching a fresh prefix. Yields the clients and the prefix."""
    with gunicorn(workers=2, env={"BARREL_STORE": store_url, "BARREL_STORE_TIMEOUT": "2"}) as srv:
        clients = spread_clients(srv.url, 2, per_worker=1)
        try:
            prefix = "w" + uuid.uuid4().hex[:8] + ":"
            for c in clients:
                c.call("store_watch", {"prefix": prefix})
            yield clients, prefix
        finally:
            for c in clients:
                c.close()


def wait_every_watcher_back(clients: list[Client], prefix: str, timeout: float, what: str) -> None:
    """Write ``prefix + "after"`` again and again until every client's watcher of ``prefix`` got
    one of those changes (after an outage: the changes made while it was away are lost)."""
    writes = iter(range(10_000))

    def every_watcher_back() -> bool:
        op(clients[0], "set", prefix + "after", next(writes))
        return all(any(ch[1] == prefix + "after" for ch in c.call("store_watched", {"prefix": prefix})
                       ["changes"]) for c in clients)

    wait_for(every_watcher_back, timeout, what, interval=0.1)


def wait_calls_work_after_failover(clients: list[Client], key: str) -> None:
    """Until a get of ``key`` works from every client's worker: the first calls after a
    failover may fail (StoreUnavailable) while connections move over."""
    for c in clients:
        wait_for(lambda c=c: "error" not in c.call("store_op", {"op": "get", "args": [key]}), 20,
                 "store calls to work on the promoted replica", interval=0.1)


def check_watchers_back_after_failover(clients: list[Client], prefix: str) -> None:
    wait_every_watcher_back(clients, prefix, 20, "watchers to get changes from the new master")
    for c in clients:
        assert op(c, "counters")["store_watch_reconnects"] >= 1


def in_parallel(clients: list[Client], event: str, data: dict[str, Any]) -> list[Any]:
    results: list[Any] = [None] * len(clients)

    def call(i: int) -> None:
        results[i] = clients[i].call(event, data, timeout=120)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    return results


def test_basic_operations_across_workers(per_worker: list[Client]) -> None:
    a, b = per_worker[0], per_worker[1]
    key = "k:" + uuid.uuid4().hex
    assert op(b, "get", key, "absent") == "absent"
    op(a, "set", key, {"n": [1, 2, "é"], "ok": True})
    assert op(b, "get", key) == {"n": [1, 2, "é"], "ok": True}  # another worker reads it
    assert op(a, "get", key) == {"n": [1, 2, "é"], "ok": True}  # a worker reads its own write
    assert op(b, "scan", key[:10]) == {key: {"n": [1, 2, "é"], "ok": True}}
    assert op(b, "delete", key) is True
    assert op(a, "delete", key) is False
    assert op(a, "get", key) is None


def test_ttl_expires(per_worker: list[Client]) -> None:
    key = "ttl:" + uuid.uuid4().hex
    op(per_worker[0], "set", key, "soon gone", 0.3)
    assert op(per_worker[1], "get", key) == "soon gone"
    wait_for(lambda: op(per_worker[1], "get", key, "expired") == "expired", 5, "the key to expire")


def test_incr_from_four_workers_is_atomic(per_worker: list[Client]) -> None:
    key = "count:" + uuid.uuid4().hex
    results = in_parallel(per_worker, "store_incr_many", {"key": key, "times": 10_000})
    assert sorted(r["pid"] for r in results) == sorted(c.pid for c in per_worker)
    assert op(per_worker[0], "get", key) == 40_000


def test_compare_and_set_race_has_one_winner(per_worker: list[Client]) -> None:
    for _ in range(5):
        key = "cas:" + uuid.uuid4().hex
        results = in_parallel(per_worker * 3, "store_cas_race", {"key": key})
        winners = [r for r in results if r["won"]]
        assert len(winners) == 1, results
        assert op(per_worker[0], "get", key) == winners[0]["pid"]


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


@pytest.mark.parametrize(
    "bad", ["set-of-ints", "object", "nan", "too-large", "int-key", "empty-key", "negative-ttl",
            "incr-text", "incr-float"],
)
def test_bad_input_gets_a_clear_error(per_worker: list[Client], bad: str) -> None:
    client = per_worker[0]
    op(client, "set", "k:text", "not a number")
    reply = client.call("store_bad", bad, timeout=10)
    assert reply["error"] == "StoreValueError", reply
    assert reply["message"]
    assert op(client, "get", "k:text") == "not a number"  # nothing lost


def test_store_sigkilled_during_writes_loses_no_acknowledged_write() -> None:
    with gunicorn(workers=2) as srv:
        clients = spread_clients(srv.url, 2, per_worker=1)
        try:
            writer, reader = clients[0], clients[-1]
            acknowledged: list[int] = []
            store_pid = srv.store_pids()[0]
            for i in range(400):
                if i == 150:
                    os.kill(store_pid, signal.SIGKILL)
                reply = writer.call("store_op", {"op": "set", "args": [f"d:{i}", i]}, timeout=30)
                if "error" not in reply:
                    acknowledged.append(i)
                else:
                    assert reply["error"] == "StoreTimeout", reply
            wait_for(lambda: [p for p in srv.store_pids() if p != store_pid], 10, "the store restarted")
            assert len(acknowledged) > 300
            stored = op(reader, "scan", "d:", 1000)
            assert all(stored.get(f"d:{i}") == i for i in acknowledged)
        finally:
            for c in clients:
                c.close()
        assert "barrel store (pid: " in srv.log() and "died; restarting" in srv.log()


def test_store_outlives_gunicorn() -> None:
    first = Gunicorn(workers=1).start()
    path = first.env["BARREL_STORE_PATH"]
    try:
        client = Client(first.url)
        op(client, "set", "kept", {"across": "restarts"})
        client.close()
    finally:
        assert first.proc is not None
        first.proc.send_signal(signal.SIGTERM)
        first.proc.wait(30)
    with gunicorn(workers=1, env={"BARREL_STORE_PATH": path}) as second:
        client = Client(second.url)
        try:
            assert op(client, "get", "kept") == {"across": "restarts"}
        finally:
            client.close()
    first.stop()


def test_compare_and_set_with_none_means_absent_not_null(per_worker: list[Client]) -> None:
    key = "cas-null:" + uuid.uuid4().hex
    op(per_worker[0], "set", key, None)  # present, holding JSON null
    results = in_parallel(per_worker, "store_cas_race", {"key": key})
    assert not any(r["won"] for r in results)
    assert op(per_worker[1], "compare_and_set", key, None, 1) is False
    assert op(per_worker[1], "delete", key) is True
    assert op(per_worker[1], "compare_and_set", key, None, 1) is True
