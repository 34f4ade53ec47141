"""The cluster API (gunicorn_barrel.cluster) on one instance of 4 workers.

Clients (python-socketio's, and socket.io-client from npm) are spread over
every worker; each call is made in the worker of one client and must see,
or act on, the sockets of all four. A SIGSTOPped worker's answer is counted
as missing within the call's timeout. The same calls across instances (over
federation and over a Redis bus) are in tests/cross_instance.py.
"""
from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cross_instance import cluster_call as cluster
from tests.cross_instance import markers_everywhere, wait_cluster_formed
from tests.harness import Client, Gunicorn, gunicorn, spread_clients, wait_for
from tests.node_clients import CLIENT_PACKAGE, NODE, NODE_MISSING_REASON, NodeClients

pytestmark = pytest.mark.integration

WORKERS = 4
TIMEOUT = 20.0
AUTH = {"token": uuid.uuid4().hex}


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    with gunicorn(workers=WORKERS) as srv:
        yield srv


@pytest.fixture
def clients(server: Gunicorn) -> Iterator[list[Client]]:
    """Two clients on each worker, each with its own auth; every worker knows the 3 others."""
    made = spread_clients(server.url + "/?team=blue", WORKERS, per_worker=2, auth=AUTH)
    try:
        wait_cluster_formed(made, WORKERS)
        yield made
    finally:
        for client in made:
            client.close()


def on_other_workers(clients: list[Client], asker: Client) -> list[Client]:
    return [c for c in clients if c.pid != asker.pid]


def test_fetch_sockets_sees_every_worker_with_handshake_and_session(server: Gunicorn,
                                                                   clients: list[Client]) -> None:
    for client in clients:
        assert client.call("save_session", {"name": f"user-{client.sid[:6]}"}) == "ok"
    asker = clients[0]
    reply = cluster(asker, "fetch_sockets")
    assert (reply["answered"], reply["missing"], reply["errors"]) == (WORKERS - 1, 0, [])
    by_sid = {s["sid"]: s for s in reply["value"]}
    assert set(by_sid) == {c.sid for c in clients}
    for client in clients:
        found = by_sid[client.sid]
        assert (found["pid"], found["namespace"]) == (client.pid, "/")
        assert found["data"] == {"name": f"user-{client.sid[:6]}"}
        assert client.sid in found["rooms"]
        handshake = found["handshake"]
        assert handshake["query"]["team"] == "blue"
        assert handshake["address"] == "127.0.0.1"
        assert handshake["headers"]["host"] == server.url.removeprefix("http://")
        assert handshake["issued"] > 0 and handshake["url"].startswith("/socket.io/")
        # What the client sent in its CONNECT packet (barrel keeps it: compat.socketio_connect).
        assert handshake["auth"] == AUTH
    assert len({s["instance"] for s in reply["value"]}) == 1


def test_room_calls_act_on_sockets_of_every_worker(clients: list[Client]) -> None:
    asker = clients[0]
    room, vip = "r-" + uuid.uuid4().hex[:8], "vip-" + uuid.uuid4().hex[:8]
    members = on_other_workers(clients, asker)[::2]  # one or two per other worker
    for member in members:
        assert asker.call("put_in_room", {"sid": member.sid, "room": room}) == "ok"
    wait_for(lambda: dict(map(tuple, cluster(asker, "room_counts")["value"])).get(room) == len(members),
             TIMEOUT, "room membership counted across workers")
    fetched = cluster(asker, "fetch_sockets", room=room)
    assert sorted(s["sid"] for s in fetched["value"]) == sorted(m.sid for m in members)

    rooms = cluster(asker, "rooms_of", members[0].sid)
    assert room in rooms["value"] and members[0].sid in rooms["value"]
    assert cluster(asker, "rooms_of", "no-such-sid")["value"] is None

    joined = cluster(asker, "sockets_join", vip, room=room)
    assert (joined["value"], joined["missing"]) == (len(members), 0)
    # The answers came after every worker applied the join: an emit now reaches them.
    token = uuid.uuid4().hex
    assert clients[-1].call("room_emit", {"room": vip, "payload": {"token": token}}) == "ok"
    markers_everywhere(clients, [clients[-1]])  # after it, in the sender's order
    for client in clients:
        got = [m for m in client.got("room_news") if m == {"token": token}]
        assert len(got) == (1 if client in members else 0), client.state()
    counts = dict(map(tuple, cluster(clients[-1], "room_counts")["value"]))
    assert counts[vip] == counts[room] == len(members)

    left = cluster(clients[-1], "sockets_leave", [vip, room])
    assert left["value"] == len(clients) and left["missing"] == 0
    counts = dict(map(tuple, cluster(asker, "room_counts")["value"]))
    assert vip not in counts and room not in counts


def test_server_side_events_reach_every_other_worker_with_answers(clients: list[Client]) -> None:
    asker = clients[0]
    tag = uuid.uuid4().hex
    reply = cluster(asker, "server_side_call", "whoami", tag)
    assert (reply["answered"], reply["missing"]) == (WORKERS - 1, 0)
    assert sorted(a["pid"] for a in reply["value"]) == sorted({c.pid for c in clients} - {asker.pid})
    assert {a["tag"] for a in reply["value"]} == {tag}

    failed = cluster(asker, "server_side_call", "fail", timeout=5)
    assert failed["missing"] == WORKERS - 1 and failed["value"] == []
    assert len(failed["errors"]) == WORKERS - 1 and "on purpose" in failed["errors"][0]
    nobody = cluster(asker, "server_side_call", "no-handler-anywhere")
    assert (nobody["value"], nobody["answered"], nobody["missing"]) == ([], WORKERS - 1, 0)

    cluster(asker, "server_side_emit", "record", tag, 7)
    for other in {c.pid: c for c in on_other_workers(clients, asker)}.values():
        wait_for(lambda c=other: [tag, 7] in c.call("server_events_seen")["seen"], TIMEOUT,
                 f"the server-side event at worker {other.pid}")
    assert [tag, 7] not in asker.call("server_events_seen")["seen"]  # others only, as in Node


def test_disconnect_sockets_of_a_room_everywhere(clients: list[Client]) -> None:
    asker = clients[0]
    room = "bye-" + uuid.uuid4().hex[:8]
    leaving = on_other_workers(clients, asker)[1::2]
    gone = {c.sid: threading.Event() for c in leaving}
    for client in leaving:
        client.sio.on("disconnect", lambda *_a, e=gone[client.sid]: e.set())
        assert asker.call("put_in_room", {"sid": client.sid, "room": room}) == "ok"
    wait_for(lambda: len(cluster(asker, "fetch_sockets", room=room)["value"]) == len(leaving), TIMEOUT,
             "the room's members")
    reply = cluster(asker, "disconnect_sockets", room=room)
    assert (reply["value"], reply["missing"]) == (len(leaving), 0)
    for client in leaving:
        wait_for(gone[client.sid].is_set, TIMEOUT, f"client {client.sid} disconnected")
    stayed = {s["sid"] for s in cluster(asker, "fetch_sockets")["value"]}
    assert stayed == {c.sid for c in clients if c not in leaving}


def test_a_stopped_worker_is_reported_missing_within_the_timeout(server: Gunicorn,
                                                                 clients: list[Client]) -> None:
    asker = clients[0]
    victim = next(c for c in clients if c.pid != asker.pid)
    assert victim.pid is not None
    # A request from the victim is a sign of life to every worker: it stays counted for the
    # next 10 s (sio.peers), longer than it is stopped below (7 s at most).
    assert cluster(victim, "room_counts")["missing"] == 0
    os.kill(victim.pid, signal.SIGSTOP)
    try:
        reply = cluster(asker, "fetch_sockets", timeout=3)
        count = cluster(asker, "room_counts", timeout=2)
        answers = cluster(asker, "server_side_call", "whoami", "x", timeout=2)
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    assert (reply["answered"], reply["missing"]) == (WORKERS - 2, 1)
    assert {s["pid"] for s in reply["value"]} == {c.pid for c in clients} - {victim.pid}
    assert (count["missing"], answers["missing"], len(answers["value"])) == (1, 1, WORKERS - 2)
    # Back from SIGSTOP, it answers again (its late answers to the old requests were dropped).
    wait_for(lambda: cluster(asker, "fetch_sockets", timeout=5)["missing"] == 0, TIMEOUT,
             "the worker answering again")


@pytest.mark.skipif(NODE is None or not CLIENT_PACKAGE.is_dir(), reason=NODE_MISSING_REASON)
def test_socketio_client_sockets_with_their_auth(server: Gunicorn, clients: list[Client],
                                                 tmp_path: Path) -> None:
    with NodeClients(server.url, "websocket", 4, tmp_path / "node.err") as js:
        ready = js.expect("ready", 60)["clients"]
        reply = cluster(clients[0], "fetch_sockets")
        by_sid = {s["sid"]: s for s in reply["value"]}
        for js_client in ready:
            found = by_sid[js_client["sid"]]
            assert found["pid"] == js_client["pid"]
            assert found["handshake"]["auth"] == {"client": js_client["index"]}
            assert found["handshake"]["query"]["client"] == str(js_client["index"])
        assert reply["missing"] == 0
