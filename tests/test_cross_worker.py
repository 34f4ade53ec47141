"""Every cross-worker socket.io operation, with real gunicorn and real clients.

gunicorn -w 4 with the example config, python-socketio clients over
WebSocket spread over all 4 workers (each client asks which worker holds it).
The same suite runs with --preload, where the app and its manager are created
before fork.
"""
from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import Client, Gunicorn, gunicorn, spread_clients, wait_for

pytestmark = pytest.mark.integration

WORKERS = 4


@pytest.fixture(scope="module", params=[(), ("--preload",)], ids=["fork-load", "preload"])
def server(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    with gunicorn(workers=WORKERS, extra_args=request.param) as srv:
        yield srv


@pytest.fixture(scope="module")
def clients(server: Gunicorn) -> Iterator[list[Client]]:
    group = spread_clients(server.url, WORKERS, per_worker=2)
    yield group
    for c in group:
        c.close()


def _other_worker(clients: list[Client], than: Client) -> Client:
    return next(c for c in clients if c.pid != than.pid)


def _fence(sender: Client, clients: list[Client]) -> None:
    """A broadcast from ``sender`` that every client receives.

    Its frame travels behind everything ``sender``'s worker published before
    (the bus keeps one sender's order across channels): once every client has
    it, nothing sent earlier, a duplicate included, can still be on its way.
    """
    token = {"token": "fence-" + uuid.uuid4().hex}
    assert sender.call("broadcast", token) == "ok"
    for c in clients:
        wait_for(lambda c=c: token in c.got("news"), 10, f"the fence at the client on {c.pid}")


def test_clients_spread_over_all_workers(server: Gunicorn, clients: list[Client]) -> None:
    pids = Counter(c.pid for c in clients)
    assert set(pids) == set(server.worker_pids())
    assert len(pids) == WORKERS


def test_broadcast_reaches_every_client_exactly_once(clients: list[Client]) -> None:
    token = uuid.uuid4().hex
    assert clients[0].call("broadcast", {"token": token}) == "ok"
    for c in clients:
        wait_for(lambda c=c: {"token": token} in c.got("news"), 10, f"broadcast at client on {c.pid}")
    # Let any duplicate arrive behind the first copy, then count: a second
    # broadcast sent after it must be seen by all, and the first exactly once.
    fence = uuid.uuid4().hex
    clients[-1].call("broadcast", {"token": fence})
    for c in clients:
        wait_for(lambda c=c: {"token": fence} in c.got("news"), 10, "fence broadcast")
        assert c.got("news").count({"token": token}) == 1


def test_broadcast_with_skip_sid(clients: list[Client]) -> None:
    token = uuid.uuid4().hex
    sender = clients[1]
    sender.call("broadcast_skip_me", {"token": token})
    others = [c for c in clients if c is not sender]
    for c in others:
        wait_for(lambda c=c: {"token": token} in c.got("news"), 10, "broadcast without sender")
    fence = uuid.uuid4().hex
    sender.call("broadcast", {"token": fence})
    wait_for(lambda: {"token": fence} in sender.got("news"), 10, "fence at sender")
    assert {"token": token} not in sender.got("news")


def test_emit_to_a_sid_on_another_worker_keeps_binary(clients: list[Client]) -> None:
    sender = clients[0]
    target = _other_worker(clients, sender)
    payload = {"blob": bytes(range(256)) * 4, "text": "héllo"}
    sender.call("emit_to", {"to": target.sid, "payload": payload})
    wait_for(lambda: target.got("direct"), 10, "direct emit")
    _fence(sender, clients)
    got = target.got("direct")
    assert got == [payload]  # once
    assert isinstance(got[0]["blob"], bytes)
    assert all(not c.got("direct") for c in clients if c is not target)


def test_room_emit_reaches_members_only_including_remote_enter(clients: list[Client]) -> None:
    room = "room-" + uuid.uuid4().hex
    actor = clients[0]
    members = [c for c in clients if c.pid != actor.pid][:3] + [actor]
    for m in members:
        # enter_room is issued by actor's worker, for sids mostly held elsewhere
        actor.call("put_in_room", {"sid": m.sid, "room": room})
    token = uuid.uuid4().hex
    # Room membership changes travel the bus too: wait until the emit lands on all.
    def everyone_got_it() -> bool:
        actor.call("room_emit", {"room": room, "payload": token})
        return all(token in m.got("room_news") for m in members)

    wait_for(everyone_got_it, 10, "room emit at every member", interval=0.2)
    outsiders = [c for c in clients if c not in members]
    assert outsiders
    fence = uuid.uuid4().hex
    actor.call("broadcast", {"token": fence})
    for c in outsiders:
        wait_for(lambda c=c: {"token": fence} in c.got("news"), 10, "fence")
        assert token not in c.got("room_news")


def test_leave_room_and_close_room_from_another_worker(clients: list[Client]) -> None:
    room = "room-" + uuid.uuid4().hex
    actor = clients[0]
    a, b = [c for c in clients if c.pid != actor.pid][:2]
    for m in (a, b):
        actor.call("put_in_room", {"sid": m.sid, "room": room})
    first = uuid.uuid4().hex

    def both_in_room() -> bool:
        actor.call("room_emit", {"room": room, "payload": first})
        return first in a.got("room_news") and first in b.got("room_news")

    wait_for(both_in_room, 10, "both in room", interval=0.2)
    actor.call("take_from_room", {"sid": a.sid, "room": room})
    second = uuid.uuid4().hex

    def only_b_gets() -> bool:
        actor.call("room_emit", {"room": room, "payload": second})
        return second in b.got("room_news")

    wait_for(only_b_gets, 10, "b still in room", interval=0.2)
    # the leave was applied before the emit that b received (same bus order)
    assert second not in a.got("room_news")
    actor.call("close_room", {"room": room})
    third = uuid.uuid4().hex
    actor.call("room_emit", {"room": room, "payload": third})
    fence = uuid.uuid4().hex
    actor.call("broadcast", {"token": fence})
    wait_for(lambda: {"token": fence} in b.got("news"), 10, "fence at b")
    assert third not in b.got("room_news")


def test_remote_call_gets_the_answer(clients: list[Client]) -> None:
    asker = clients[0]
    target = _other_worker(clients, asker)
    reply = asker.call("ask", {"to": target.sid, "question": "meaning?"}, timeout=20)
    assert reply == {"answer": f"42 from {target.pid}", "pid": asker.pid}
    assert "meaning?" in target.got("question")


def test_emit_callback_from_another_worker(clients: list[Client]) -> None:
    asker = clients[1]
    target = _other_worker(clients, asker)
    reply = asker.call("emit_with_ack", {"to": target.sid, "question": "ack?"}, timeout=20)
    assert reply == {"answer": [f"42 from {target.pid}"]}


def test_remote_disconnect(server: Gunicorn) -> None:
    group = spread_clients(server.url, WORKERS, per_worker=1)
    try:
        actor = group[0]
        victim = _other_worker(group, actor)
        assert actor.call("kick", {"sid": victim.sid}) == "ok"
        wait_for(lambda: not victim.sio.connected or victim.sio.get_sid() != victim.sid, 10,
                 "victim disconnected")
        assert actor.sio.connected
    finally:
        for c in group:
            c.close()


@pytest.mark.parametrize(("shape", "expected"), [
    ("none", []), ("one", [{"a": 1}]), ("several", [1, "two", [3]]), ("binary", [b"\x00\xff", "x"]),
])
def test_emit_argument_shapes_reach_every_worker_unchanged(
    clients: list[Client], shape: str, expected: list[Any]
) -> None:
    # Packets without attachments are encoded once by the emitting worker;
    # the others write them out as they are. Both paths must agree.
    clients[0].call("emit_args", shape)
    for c in clients:
        wait_for(lambda c=c: expected in c.got("args"), 10, f"{shape} arguments at {c.pid}")


def test_a_burst_of_emits_arrives_whole_and_once(clients: list[Client]) -> None:
    # 600 emits without a yield: pushed as batches of up to wire.MAX_BATCH
    # frames, split again by the broadcaster.
    clients[0].call("emit_burst", 600)
    def burst(c: Client) -> list[int]:
        return [m["burst"] for m in c.got("news") if isinstance(m, dict) and "burst" in m]

    # Whole and once; the order is checked with node clients elsewhere
    # (python-socketio's client handles each event in a thread of its own).
    for c in clients:
        wait_for(lambda c=c: len(burst(c)) >= 600, 20, f"the burst at {c.pid}")
    _fence(clients[0], clients)
    for c in clients:
        assert sorted(burst(c)) == list(range(600))


def test_frames_for_one_sid_reach_only_its_worker(clients: list[Client]) -> None:
    """An emit to a sid travels on its owner's channel: the broadcaster filters it out for the rest."""
    target = clients[0]
    sender = next(c for c in clients if c.pid != target.pid)
    witnesses = {c.pid: c for c in clients}  # one client per worker, to read its counters

    def delivered() -> dict[int, int]:
        # The app's frames: the cluster's heartbeats (every 5 s, to every worker) apart.
        counts = {pid: c.call("bus_counters")["counters"] for pid, c in witnesses.items()}
        return {pid: n.get("frames_delivered", 0) - n.get("cluster_frames_received", 0)
                for pid, n in counts.items()}

    tag = uuid.uuid4().hex
    before = delivered()
    for n in range(50):
        sender.call("emit_to", {"to": target.sid, "payload": {"only": tag, "n": n}})
    def arrived() -> int:
        return len([m for m in target.got("direct") if isinstance(m, dict) and m.get("only") == tag])

    wait_for(lambda: arrived() >= 50, 10, "50 emits at their sid")
    _fence(sender, clients)
    assert arrived() == 50
    after = delivered()
    # Each worker delivered the fence; the target also the 50 emits, the others nothing more.
    assert after[target.pid] - before[target.pid] == 50 + 1, (before, after)
    for pid in witnesses:
        if pid != target.pid:
            assert after[pid] == before[pid] + 1, (pid, before, after)
