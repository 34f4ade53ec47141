"""A Flask-SocketIO app with BarrelManager, under real gunicorn -w 4.

python-socketio clients over WebSocket are spread over all 4 workers; each
cross-worker operation is issued through Flask-SocketIO's own API
(tests/apps/flask_app.py), and plain Flask routes are served next to it.
The suite runs once with the app loaded in each worker and once with
--preload (app and manager created in the arbiter, before fork).
"""
from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
import requests

from tests.harness import Client, Gunicorn, gunicorn, spread_clients, wait_for

pytestmark = pytest.mark.integration

WORKERS = 4
APP = "tests.apps.flask_app:wsgi"


@pytest.fixture(scope="module", params=[(), ("--preload",)], ids=["fork-load", "preload"])
def server(request: pytest.FixtureRequest) -> Iterator[Gunicorn]:
    with gunicorn(app=APP, workers=WORKERS, extra_args=request.param) as srv:
        yield srv


@pytest.fixture(scope="module")
def clients(server: Gunicorn) -> Iterator[list[Client]]:
    group = spread_clients(server.url, WORKERS, per_worker=2)
    yield group
    for c in group:
        c.close()


def _other_worker(clients: list[Client], than: Client) -> Client:
    return next(c for c in clients if c.pid != than.pid)


def _fence(clients: list[Client], sender: Client) -> None:
    """Broadcast a fresh token and wait until every client has it.

    Bus frames reach each worker in order, so whatever was emitted before the
    fence has been delivered (or never will be) once the fence is seen.
    """
    fence = uuid.uuid4().hex
    assert sender.call("broadcast", {"fence": fence}) == "ok"
    for c in clients:
        wait_for(lambda c=c: {"fence": fence} in c.got("news"), 10, f"fence at client on {c.pid}")


def test_clients_spread_over_all_workers(server: Gunicorn, clients: list[Client]) -> None:
    pids = Counter(c.pid for c in clients)
    assert set(pids) == set(server.worker_pids())
    assert len(pids) == WORKERS
    assert len({c.sid for c in clients}) == len(clients)


def test_broadcast_reaches_every_client_exactly_once(clients: list[Client]) -> None:
    token = uuid.uuid4().hex
    assert clients[0].call("broadcast", {"token": token}) == "ok"
    for c in clients:
        wait_for(lambda c=c: {"token": token} in c.got("news"), 10, f"broadcast at client on {c.pid}")
    _fence(clients, clients[-1])
    for c in clients:
        assert c.got("news").count({"token": token}) == 1, f"client on {c.pid}: {c.got('news')}"


def test_emit_from_a_plain_http_route_reaches_every_client_once(
    server: Gunicorn, clients: list[Client]
) -> None:
    token = uuid.uuid4().hex
    reply = requests.post(server.url + "/announce", json={"http": token}, timeout=10)
    assert reply.status_code == 200
    assert reply.json()["pid"] in server.worker_pids()
    for c in clients:
        wait_for(lambda c=c: {"http": token} in c.got("news"), 10, f"HTTP emit at client on {c.pid}")
    _fence(clients, clients[0])
    for c in clients:
        assert c.got("news").count({"http": token}) == 1


def test_emit_to_a_sid_on_another_worker_keeps_binary(clients: list[Client]) -> None:
    sender = clients[0]
    target = _other_worker(clients, sender)
    payload = {"blob": bytes(range(256)), "text": "héllo", "token": uuid.uuid4().hex}
    assert sender.call("emit_to", {"to": target.sid, "payload": payload}) == "ok"
    wait_for(lambda: payload in target.got("direct"), 10, "direct emit")
    _fence(clients, sender)
    assert target.got("direct").count(payload) == 1
    assert all(payload not in c.got("direct") for c in clients if c is not target)


def test_room_emit_reaches_members_entered_from_another_worker_only(clients: list[Client]) -> None:
    room = "room-" + uuid.uuid4().hex
    actor = clients[0]
    # one member on each of the other workers, joined by actor's worker
    members: list[Client] = []
    for c in clients:
        if c.pid != actor.pid and c.pid not in {m.pid for m in members}:
            members.append(c)
    assert len(members) == WORKERS - 1
    for m in members:
        assert actor.call("put_in_room", {"sid": m.sid, "room": room}) == "ok"
    token = uuid.uuid4().hex

    # The joins travel the bus; keep emitting until every member has one copy.
    def every_member_got_it() -> bool:
        actor.call("room_emit", {"room": room, "payload": token})
        return all(token in m.got("room_news") for m in members)

    wait_for(every_member_got_it, 10, "room emit at every member", interval=0.2)
    _fence(clients, actor)
    outsiders = [c for c in clients if c not in members]
    assert actor in outsiders
    for c in outsiders:
        assert token not in c.got("room_news"), f"outsider on {c.pid} got the room emit"

    # After a leave issued from yet another worker, that member gets no more.
    leaver, stayer = members[0], members[1]
    other_actor = next(c for c in clients if c.pid not in (actor.pid, leaver.pid))
    assert other_actor.call("take_from_room", {"sid": leaver.sid, "room": room}) == "ok"
    second = uuid.uuid4().hex

    def stayer_got_second() -> bool:
        other_actor.call("room_emit", {"room": room, "payload": second})
        return second in stayer.got("room_news")

    wait_for(stayer_got_second, 10, "room emit after leave", interval=0.2)
    _fence(clients, other_actor)
    assert second not in leaver.got("room_news")


def test_remote_call_is_answered_by_a_client_on_another_worker(clients: list[Client]) -> None:
    asker = clients[0]
    for target in {c.pid: c for c in clients if c.pid != asker.pid}.values():
        question = "meaning? " + uuid.uuid4().hex
        reply = asker.call("ask", {"to": target.sid, "question": question}, timeout=20)
        assert reply == {"answer": f"42 from {target.pid}", "pid": asker.pid}
        assert target.got("question").count(question) == 1


def test_remote_disconnect(server: Gunicorn) -> None:
    group = spread_clients(server.url, WORKERS, per_worker=1)
    try:
        actor = group[0]
        victim = _other_worker(group, actor)
        assert actor.call("kick", {"sid": victim.sid}) == "ok"
        wait_for(lambda: not victim.sio.connected or victim.sio.get_sid() != victim.sid, 10,
                 "victim disconnected")
        assert actor.sio.connected
        bystanders = [c for c in group if c is not victim]
        _fence(bystanders, actor)
        assert all(c.sio.connected for c in bystanders)
    finally:
        for c in group:
            c.close()


def test_plain_flask_route_still_served(server: Gunicorn, clients: list[Client]) -> None:
    seen: set[int] = set()
    for _ in range(20):
        reply = requests.get(server.url + "/plain", timeout=10)
        assert reply.status_code == 200
        body = reply.json()
        assert body["route"] == "plain"
        seen.add(body["pid"])
    assert seen <= set(server.worker_pids())
    missing = requests.get(server.url + "/no-such-page", timeout=10)
    assert missing.status_code == 404
    # the socket.io clients were not disturbed by the HTTP traffic
    assert all(c.sio.connected for c in clients)
