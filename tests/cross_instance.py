"""Checks across several linked gunicorn instances, whatever links them (federation, Redis, ...).

Each function takes running ``harness.Gunicorn`` instances (linked by the
backend under test) and clients on every worker of every instance
(``clients_everywhere``), acts through clients of one instance and asserts
what clients of every instance see: each message exactly once. "Exactly
once" is checked without sleeping: a sender's later message (a marker) is
delivered after its earlier ones (per-sender order), so once the marker is
everywhere, anything missing is lost and anything doubled has shown.
"""
from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from tests.harness import Client, Gunicorn, spread_clients, wait_for

TIMEOUT = 20.0


def clients_everywhere(servers: Sequence[Gunicorn], per_worker: int = 1) -> list[list[Client]]:
    """Clients on every worker of every instance: one list per instance."""
    return [spread_clients(s.url, s.workers, per_worker=per_worker) for s in servers]


def check_all_on_new_instances(count: int, env: dict[str, str], workers: int = 2) -> None:
    """Start ``count`` instances of ``workers`` workers with ``env`` (the backend that links
    them), run ``check_all`` on them, stop them."""
    servers = [Gunicorn(workers=workers, env=env) for _ in range(count)]
    try:
        for srv in servers:
            srv.start()
        check_all(servers)
    finally:
        for srv in servers:
            srv.stop()


def close_all(groups: Sequence[Sequence[Client]]) -> None:
    for group in groups:
        for client in group:
            client.close()


def _flat(groups: Sequence[Sequence[Client]]) -> list[Client]:
    return [c for group in groups for c in group]


def _count(client: Client, event: str, key: str, value: Any) -> int:
    return sum(1 for item in client.got(event) if isinstance(item, dict) and item.get(key) == value)


def check_broadcast(groups: Sequence[Sequence[Client]], per_sender: int = 3) -> None:
    """A broadcast from any instance reaches every client of every instance exactly once."""
    everyone = _flat(groups)
    sent = []
    for group in groups:
        sender = group[0]
        for _ in range(per_sender):
            token = uuid.uuid4().hex
            assert sender.call("broadcast", {"token": token}) == "ok"
            sent.append(token)
    last_of_each = sent[per_sender - 1::per_sender]
    for client in everyone:
        wait_for(lambda c=client: all(_count(c, "news", "token", t) for t in last_of_each), TIMEOUT,
                 f"the last broadcast of every instance at client {client.sid} (worker {client.pid})")
    for client in everyone:
        counts = Counter(item.get("token") for item in client.got("news") if isinstance(item, dict))
        assert [counts[t] for t in sent] == [1] * len(sent), (client.pid, counts)


def check_rooms(groups: Sequence[Sequence[Client]]) -> None:
    """Room membership set from one instance holds on all; room emits from any instance reach
    exactly the members, once; a member taken out gets nothing more."""
    room = "room-" + uuid.uuid4().hex[:8]
    everyone = _flat(groups)
    members = [group[i] for group in groups for i in range(0, len(group), 2)]  # some of each instance
    assert len(members) < len(everyone)  # outsiders exist, who must get nothing
    admin = groups[0][0]
    for member in members:
        assert admin.call("put_in_room", {"sid": member.sid, "room": room}) == "ok"
    # The admin's own emit follows its room changes (one sender's order): once every
    # member has it, membership holds on every instance.
    hello = uuid.uuid4().hex
    assert admin.call("room_emit", {"room": room, "payload": {"token": hello}}) == "ok"
    for member in members:
        wait_for(lambda m=member: _count(m, "room_news", "token", hello), TIMEOUT, "room membership")
    tokens = []
    for group in groups:
        token = uuid.uuid4().hex
        assert group[-1].call("room_emit", {"room": room, "payload": {"token": token}}) == "ok"
        tokens.append((group[-1], token))
    markers_everywhere(everyone, [sender for sender, _ in tokens])
    for client in everyone:
        counts = [_count(client, "room_news", "token", token) for _, token in tokens]
        assert counts == ([1] * len(tokens) if client in members else [0] * len(tokens)), client.pid
    # Take a member of the last instance out, from the first instance.
    leaver = next(m for m in members if m in groups[-1])
    assert admin.call("take_from_room", {"sid": leaver.sid, "room": room}) == "ok"
    after = uuid.uuid4().hex
    assert admin.call("room_emit", {"room": room, "payload": {"token": after}}) == "ok"
    markers_everywhere(everyone, [admin])
    for member in members:
        assert _count(member, "room_news", "token", after) == (0 if member is leaver else 1), member.pid


def markers_everywhere(everyone: Sequence[Client], senders: Sequence[Client]) -> None:
    """Each sender broadcasts a marker; return once every client has every marker."""
    markers = []
    for sender in senders:
        marker = uuid.uuid4().hex
        assert sender.call("broadcast", {"marker": marker}) == "ok"
        markers.append(marker)
    for client in everyone:
        wait_for(lambda c=client: all(_count(c, "news", "marker", m) for m in markers), TIMEOUT,
                 f"the markers at client {client.sid}")


def check_direct_and_call(groups: Sequence[Sequence[Client]]) -> None:
    """An emit to one sid, a server-to-client call and an emit with an ack, across instances."""
    for source, target in zip(groups, [*groups[1:], groups[0]], strict=True):
        asker, answerer = source[0], target[-1]
        token = uuid.uuid4().hex
        assert asker.call("emit_to", {"to": answerer.sid, "payload": {"token": token}}) == "ok"
        wait_for(lambda a=answerer, t=token: _count(a, "direct", "token", t), TIMEOUT, "the direct emit")
        reply = asker.call("ask", {"question": token, "to": answerer.sid})
        assert reply == {"answer": f"42 from {answerer.pid}", "pid": asker.pid}, reply
        acked = asker.call("emit_with_ack", {"question": token + "-ack", "to": answerer.sid})
        assert acked == {"answer": [f"42 from {answerer.pid}"]}, acked
        assert answerer.got("question").count(token) == 1
        assert _count(answerer, "direct", "token", token) == 1


def check_remote_disconnect(groups: Sequence[Sequence[Client]]) -> None:
    """Clients held by another instance are disconnected from this one (python-socketio's
    disconnect, and the cluster API's disconnect_sockets of a room); the others stay."""
    everyone = _flat(groups)
    victim, room_victim = groups[-1][-1], groups[-1][0]
    assert victim is not room_victim
    gone, room_gone = threading.Event(), threading.Event()
    victim.sio.on("disconnect", lambda *_args: gone.set())
    room_victim.sio.on("disconnect", lambda *_args: room_gone.set())
    assert groups[0][0].call("kick", {"sid": victim.sid}) == "ok"
    wait_for(gone.is_set, TIMEOUT, "the kicked client's disconnect")
    room = "to-go-" + uuid.uuid4().hex[:8]
    assert groups[0][0].call("put_in_room", {"sid": room_victim.sid, "room": room}) == "ok"
    wait_for(lambda: dict(map(tuple, cluster_call(groups[0][0], "room_counts")["value"])).get(room) == 1,
             TIMEOUT, "the room to disconnect")
    assert cluster_call(groups[0][0], "disconnect_sockets", room=room)["value"] == 1
    wait_for(room_gone.is_set, TIMEOUT, "the disconnect of the room's socket")
    survivors = [c for c in everyone if c not in (victim, room_victim)]
    assert all(c.sio.connected for c in survivors)
    markers_everywhere(survivors, [groups[0][0]])


def wait_cluster_formed(clients: Sequence[Client], workers: int) -> None:
    """Wait until the worker of each client counts ``workers`` workers alive (itself included)."""
    for client in {c.pid: c for c in clients}.values():
        wait_for(lambda c=client: cluster_call(c, "server_count")["value"] == workers, TIMEOUT,
                 f"worker {client.pid} knowing all {workers} workers")


def check_cluster_api(groups: Sequence[Sequence[Client]]) -> None:
    """gunicorn_barrel.cluster from one instance sees and acts on the sockets of all of them."""
    everyone = _flat(groups)
    workers = len({(c.pid, id(group)) for group in groups for c in group})
    one_per_worker = [c for group in groups for c in {c.pid: c for c in group}.values()]
    wait_cluster_formed(everyone, workers)
    first, last = groups[0][0], groups[-1][-1]
    for asker in (first, last):
        fetched = cluster_call(asker, "fetch_sockets")
        assert (fetched["answered"], fetched["missing"]) == (workers - 1, 0), fetched
        assert {s["sid"]: s["pid"] for s in fetched["value"]} == {c.sid: c.pid for c in everyone}
        instances = {s["instance"] for s in fetched["value"]}
        assert len(instances) == len(groups)
    room = "cl-" + uuid.uuid4().hex[:8]
    joined = cluster_call(first, "sockets_join", room, room=last.sid)  # a sid is a room
    assert (joined["value"], joined["missing"]) == (1, 0)
    assert room in cluster_call(groups[len(groups) // 2][0], "rooms_of", last.sid)["value"]
    counts = dict(map(tuple, cluster_call(last, "room_counts")["value"]))
    assert counts[room] == 1
    assert cluster_call(last, "sockets_leave", room)["value"] == len(everyone)
    tag = uuid.uuid4().hex
    answers = cluster_call(last, "server_side_call", "whoami", tag)
    assert (answers["answered"], answers["missing"]) == (workers - 1, 0)
    assert len({(a["instance"], a["pid"]) for a in answers["value"]}) == workers - 1
    assert {a["tag"] for a in answers["value"]} == {tag}
    cluster_call(first, "server_side_emit", "record", tag)
    for client in one_per_worker:
        if client.pid != first.pid:
            wait_for(lambda c=client: [tag] in c.call("server_events_seen")["seen"], TIMEOUT,
                     f"the server-side event at worker {client.pid}")


def cluster_call(client: Client, call: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A call of gunicorn_barrel.cluster made in ``client``'s worker (tests/apps/sio_app.py)."""
    return dict(client.call("cluster", {"call": call, "args": list(args), "kwargs": kwargs}))


def check_events(groups: Sequence[Sequence[Client]]) -> None:
    """gunicorn_barrel.events emitted on one instance reach every worker of every instance once."""
    name = "ev-" + uuid.uuid4().hex[:8]
    one_per_worker = [list({c.pid: c for c in group}.values()) for group in groups]
    for client in _flat(one_per_worker):
        client.call("ev_subscribe", name)
    # Subscriptions are local to each worker: emitted after every worker subscribed.
    groups[0][0].call("ev_emit", {"name": name, "count": 3})
    for client in _flat(one_per_worker):
        seen = wait_for(lambda c=client: (r := c.call("ev_seen", name)["seen"]) and len(r) >= 3 and r,
                        TIMEOUT, f"the events at worker {client.pid}")
        assert [e["i"] for e in seen] == [0, 1, 2], (client.pid, seen)


def check_all(servers: Sequence[Gunicorn]) -> None:
    """Every check above, on clients spread over every worker of every instance."""
    groups = clients_everywhere(servers)
    try:
        check_broadcast(groups)
        check_rooms(groups)
        check_direct_and_call(groups)
        check_events(groups)
        check_cluster_api(groups)
        check_remote_disconnect(groups)
    finally:
        close_all(groups)
