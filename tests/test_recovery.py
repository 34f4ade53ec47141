"""Connection state recovery across workers and instances, with socket.io-client from npm.

socket.io-client clients (v4.8, which sends ``{pid, offset}`` when it
reconnects) listen to a stream of 100 numbered messages a second. Three times
during the stream the TCP connection of every one of them is shut down, as a
network failure would, and each reconnects at once:

- on one instance of ``-w 4``, the server shuts the connections down; the
  clients come back to whichever worker accepts them;
- on two instances of ``-w 2`` sharing a Redis bus, the clients go through a
  TCP proxy (a load balancer) that cuts them and sends them to the other
  instance each time.

Every reconnection must be recovered (``socket.recovered``, the same sid),
and every client must have every message exactly once and in order. A
client kept away longer than ``recovery_max_disconnection`` gets a fresh
session.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cross_instance import wait_cluster_formed
from tests.harness import Client, Gunicorn, free_port, gunicorn, spread_clients, wait_for
from tests.node_clients import CLIENT_PACKAGE, NODE, NODE_MISSING_REASON, NodeClients, spread_node_clients
from tests.redis_server import RedisServer
from tests.tcp_proxy import tcp_proxy

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(NODE is None or not CLIENT_PACKAGE.is_dir(), reason=NODE_MISSING_REASON),
]

WORKERS = 4
RATE, COUNT = 100, 700
CUT_AT = (100, 250, 400)  # messages received by every client before each cut
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    with gunicorn(workers=WORKERS, env={"TEST_RECOVERY": "1"}) as srv:
        yield srv


@pytest.fixture
def control(server: Gunicorn) -> Iterator[list[Client]]:
    """One python client per worker, to act in each (they never join the stream)."""
    clients = spread_clients(server.url, WORKERS, per_worker=1)
    try:
        wait_cluster_formed(clients, WORKERS)
        yield clients
    finally:
        for client in clients:
            client.close()


def _received(js: Any, tag: str) -> list[dict[str, Any]]:
    return [s.get(tag, {"count": 0}) for s in js.ask("streams?", "streams")["streams"]]


def _stream_with_cuts(js: NodeClients, sender: Client, tag: str, cut: Any) -> list[list[dict[str, Any]]]:
    """Stream COUNT messages to the clients, ``cut()`` them at each of CUT_AT; check every
    message arrived once and in order; the reconnections of each client."""
    js.ask("join_stream", "joined")
    assert sender.call("start_stream", {"tag": tag, "count": COUNT, "rate": RATE}) == "started"
    clients = len(_received(js, tag))
    for round_no, at in enumerate(CUT_AT, start=1):
        wait_for(lambda a=at: min(s["count"] for s in _received(js, tag)) >= a, TIMEOUT,
                 f"every client past message {at}")
        assert cut() == clients, f"round {round_no}: not every connection was cut"
        wait_for(lambda r=round_no: all(len(c) >= r and all(e["pid"] for e in c)
                                        for c in js.ask("connections?", "connections")["connections"]),
                 TIMEOUT, f"every client reconnected (round {round_no})")
    wait_for(lambda: all(s["count"] >= COUNT for s in _received(js, tag)), TIMEOUT,
             "every message at every client")
    for stream in _received(js, tag):
        assert (stream["count"], stream["last"], stream["duplicates"], stream["outOfOrder"]) == (
            COUNT, COUNT - 1, 0, 0), stream
    connections: list[list[dict[str, Any]]] = js.ask("connections?", "connections")["connections"]
    return connections


def test_clients_cut_off_get_their_session_and_every_message_once_in_order(
        server: Gunicorn, control: list[Client], tmp_path: Path) -> None:
    with spread_node_clients(server, "websocket", 8, tmp_path / "node.err", workers=WORKERS) as (js, ready):
        def cut() -> int:
            return sum(c.call("cut_stream")["cut"] for c in control)

        connections = _stream_with_cuts(js, control[0], "one-instance", cut)
    for client, reconnects in zip(ready, connections, strict=True):
        assert [(r["sid"], r["recovered"], r["session"]) for r in reconnects] == [
            (client["sid"], True, {"client": client["index"]})] * len(CUT_AT)
    moved = sum(r["pid"] != c["pid"] for c, rs in zip(ready, connections, strict=True) for r in rs)
    print(f"{moved} of {len(ready) * len(CUT_AT)} reconnections landed on another worker")
    assert moved > 0


def test_over_a_redis_bus_clients_recover_on_the_other_instance(redis_server: RedisServer,
                                                                 tmp_path: Path) -> None:
    env = {"TEST_RECOVERY": "1", "BARREL_BUS": redis_server.url, "BARREL_BUS_NAMESPACE": "recovery"}
    with gunicorn(workers=2, env=env) as a, gunicorn(workers=2, env=env) as b, tcp_proxy(a.port) as proxy:
        control = spread_clients(a.url, 2, per_worker=1) + spread_clients(b.url, 2, per_worker=1)
        try:
            wait_cluster_formed(control, 4)
            with NodeClients(proxy.url, "websocket", 6, tmp_path / "node.err") as js:
                ready = js.expect("ready", 60)["clients"]
                instances = [a, b]

                def cut() -> int:  # to the other instance
                    instances.reverse()
                    proxy.switch(instances[0].port)
                    return proxy.cut()

                connections = _stream_with_cuts(js, control[-1], "two-instances", cut)
        finally:
            for client in control:
                client.close()
    a_pids, b_pids = set(a.started_pids), set(b.started_pids)
    for client, reconnects in zip(ready, connections, strict=True):
        assert client["pid"] in a_pids
        assert [(r["sid"], r["recovered"], r["session"]) for r in reconnects] == [
            (client["sid"], True, {"client": client["index"]})] * len(CUT_AT)
        assert [r["pid"] in pids for r, pids in zip(reconnects, (b_pids, a_pids, b_pids), strict=True)] == [
            True] * len(CUT_AT), reconnects


def test_a_client_back_after_the_window_gets_a_fresh_session(tmp_path: Path) -> None:
    """recovery_max_disconnection = 1 s; the proxy refuses the client for longer: no recovery."""
    env = {"TEST_RECOVERY": "1", "BARREL_RECOVERY_MAX_DISCONNECTION": "1"}
    with gunicorn(workers=2, env=env) as srv, tcp_proxy(srv.port) as proxy:
        with NodeClients(proxy.url, "websocket", 2, tmp_path / "node.err") as js:
            ready = js.expect("ready", 60)["clients"]
            proxy.switch(free_port())  # nothing listens there: reconnecting fails meanwhile
            assert proxy.cut() == len(ready)
            cut_at = time.monotonic()
            wait_for(lambda: time.monotonic() - cut_at > 2.0, 5, "the recovery window to pass")
            proxy.switch(srv.port)
            wait_for(lambda: all(len(c) == 1 and c[0]["pid"]
                                 for c in js.ask("connections?", "connections")["connections"]),
                     TIMEOUT, "every client reconnected")
            connections = js.ask("connections?", "connections")["connections"]
    for client, (again,) in zip(ready, connections, strict=True):
        assert again["recovered"] is False and again["sid"] != client["sid"], again
        assert again["session"] == {}, again  # a fresh session: nothing kept
