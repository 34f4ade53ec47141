"""Named cross-worker events and store changes forwarded to a room, under gunicorn -w 4."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Client, gunicorn, spread_clients, wait_for
from tests.test_store import op

pytestmark = pytest.mark.integration

WORKERS = 4


@pytest.fixture(scope="module")
def per_worker() -> Iterator[list[Client]]:
    with gunicorn(workers=WORKERS) as srv:
        clients = spread_clients(srv.url, WORKERS, per_worker=1)
        yield list({c.pid: c for c in clients}.values())
        for c in clients:
            c.close()


def test_events_reach_every_worker_once_in_each_senders_order(per_worker: list[Client]) -> None:
    name = "ev-" + uuid.uuid4().hex[:8]
    for c in per_worker:
        c.call("ev_subscribe", name)
    senders = per_worker[:2]
    threads = [threading.Thread(target=s.call, args=("ev_emit", {"name": name, "count": 50}),
                                kwargs={"timeout": 30}) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    def seen(c: Client) -> list[dict[str, Any]]:
        return list(c.call("ev_seen", name)["seen"])

    for c in per_worker:
        wait_for(lambda c=c: len(seen(c)) >= 100, 10, f"events at {c.pid}")
        got = seen(c)
        assert len(got) == 100
        for s in senders:
            assert [e["i"] for e in got if e["from"] == s.pid] == list(range(50))


def test_store_changes_forwarded_to_a_room_reach_each_member_once(per_worker: list[Client]) -> None:
    room = "kv-" + uuid.uuid4().hex[:8]
    prefix = room + ":"
    received: dict[int, list[Any]] = {c.pid or 0: [] for c in per_worker}
    for c in per_worker:
        c.sio.on("store_change", lambda data, c=c: received[c.pid or 0].append(data))
        c.call("store_forward", {"prefix": prefix, "room": room})
    op(per_worker[0], "set", prefix + "a", 1)
    op(per_worker[1], "incr", prefix + "a")
    op(per_worker[2], "delete", prefix + "a")
    op(per_worker[3], "set", "elsewhere:" + room, 1)
    for pid, changes in received.items():
        wait_for(lambda changes=changes: len(changes) >= 3, 10, f"changes at the client on {pid}")
        assert [(ch["op"], ch["value"]) for ch in changes] == [("set", 1), ("set", 2), ("delete", None)]
