"""Connection state recovery across workers, with socket.io-client from npm.

socket.io-client clients (v4.8, which sends ``{pid, offset}`` when it
reconnects) on every worker of ``-w 4`` listen to a stream of 100 numbered
messages a second. Three times during the stream the TCP connection of every
one of them is shut down on the server's side, as a network failure would;
each reconnects at once, to whichever worker accepts it. Every reconnection
must be recovered (``socket.recovered``, the same sid), and every client must
have every message exactly once and in order.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cross_instance import cluster_call
from tests.harness import Client, Gunicorn, gunicorn, spread_clients, wait_for
from tests.node_clients import CLIENT_PACKAGE, NODE, NODE_MISSING_REASON, spread_node_clients

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
        for client in clients:
            wait_for(lambda c=client: cluster_call(c, "server_count")["value"] == WORKERS, TIMEOUT,
                     f"worker {client.pid} knowing all {WORKERS} workers")
        yield clients
    finally:
        for client in clients:
            client.close()


def _received(js: Any, tag: str) -> list[dict[str, Any]]:
    return [s.get(tag, {"count": 0}) for s in js.ask("streams?", "streams")["streams"]]


def test_clients_cut_off_get_their_session_and_every_message_once_in_order(
        server: Gunicorn, control: list[Client], tmp_path: Path) -> None:
    tag = "recovery"
    with spread_node_clients(server, "websocket", 8, tmp_path / "node.err", workers=WORKERS) as (js, ready):
        js.ask("join_stream", "joined")
        assert control[0].call("start_stream", {"tag": tag, "count": COUNT, "rate": RATE}) == "started"
        for round_no, at in enumerate(CUT_AT, start=1):
            wait_for(lambda a=at: min(s["count"] for s in _received(js, tag)) >= a, TIMEOUT,
                     f"every client past message {at}")
            cut = sum(c.call("cut_stream")["cut"] for c in control)
            assert cut == len(ready), f"round {round_no}: {cut} connections cut of {len(ready)}"
            wait_for(lambda r=round_no: all(len(c) >= r and all(e["pid"] for e in c)
                                            for c in js.ask("connections?", "connections")["connections"]),
                     TIMEOUT, f"every client reconnected (round {round_no})")
        wait_for(lambda: all(s["count"] >= COUNT for s in _received(js, tag)), TIMEOUT,
                 "every message at every client")
        streams = _received(js, tag)
        connections = js.ask("connections?", "connections")["connections"]
    for client, stream, reconnects in zip(ready, streams, connections, strict=True):
        assert (stream["count"], stream["last"], stream["duplicates"], stream["outOfOrder"]) == (
            COUNT, COUNT - 1, 0, 0), (client, stream)
        assert [r["recovered"] for r in reconnects] == [True] * len(CUT_AT), reconnects
        assert {r["sid"] for r in reconnects} == {client["sid"]}, reconnects
    moved = sum(r["pid"] != c["pid"] for c, rs in zip(ready, connections, strict=True) for r in rs)
    print(f"{moved} of {len(ready) * len(CUT_AT)} reconnections landed on another worker")
    assert moved > 0
