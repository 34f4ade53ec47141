"""The bus on Redis (``bus`` = a redis:// URL) under real gunicorn, real clients, real redis-server.

Each module run starts its own redis-server on a free loopback port (see
tests/redis_server.py). Covered: every cross-worker operation of
test_cross_worker.py on -w 4; three gunicorn instances sharing one Redis;
Redis SIGKILLed and restarted, and SIGSTOPped, while a stream is sent.
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

# The cross-worker checks run here too, with this module's server (a Redis bus).
from tests.test_cross_worker import (  # noqa: F401 - collected by pytest with this module's fixtures
    clients,
    test_broadcast_reaches_every_client_exactly_once,
    test_broadcast_with_skip_sid,
    test_clients_spread_over_all_workers,
    test_emit_callback_from_another_worker,
    test_emit_to_a_sid_on_another_worker_keeps_binary,
    test_leave_room_and_close_room_from_another_worker,
    test_remote_call_gets_the_answer,
    test_remote_disconnect,
    test_room_emit_reaches_members_only_including_remote_enter,
)

pytestmark = pytest.mark.integration

WORKERS = 4


def redis_bus_env(rds: RedisServer, namespace: str) -> dict[str, str]:
    return {"BARREL_BUS": rds.url, "BARREL_BUS_NAMESPACE": namespace}


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[Gunicorn]:
    with gunicorn(workers=WORKERS, env=redis_bus_env(redis_server, "w4")) as srv:
        yield srv


def counters_of(client: Client) -> dict[str, int]:
    """The bus counters of the worker holding ``client``."""
    answer = client.call("bus_counters")
    assert answer["pid"] == client.pid
    return dict(answer["counters"])


def test_no_broadcaster_and_the_store_follows_the_bus(
    server: Gunicorn, clients: list[Client], redis_server: RedisServer
) -> None:
    assert server.broadcaster_pids() == []
    assert server.store_pids() == []
    key = "k:" + uuid.uuid4().hex
    a, b = clients[0], next(c for c in clients if c.pid != clients[0].pid)
    a.call("store_op", {"op": "set", "args": [key, {"n": 1}]})
    assert b.call("store_op", {"op": "get", "args": [key]})["result"] == {"n": 1}
    assert redis_server.client.get("barrel:kv:" + key) == b'{"n":1}'


def test_frames_travel_on_the_namespaced_redis_channel(clients: list[Client], redis_server: RedisServer) -> None:
    pubsub = redis_server.client.pubsub()
    try:
        pubsub.psubscribe("barrel:bus:w4:*")
        wait_for(lambda: pubsub.get_message(timeout=0.1) is not None, 10, "psubscribe confirmation")
        token = uuid.uuid4().hex
        clients[0].call("broadcast", {"token": token})

        def seen() -> Any:
            message = pubsub.get_message(timeout=0.1)
            return message if message and token.encode() in message["data"] else None

        message = wait_for(seen, 10, "the broadcast frame on Redis")
        assert message["channel"] == b"barrel:bus:w4:sio:socketio"
        assert message["data"][:3] == b"BRL"  # the wire format of the zmq bus, header included
    finally:
        pubsub.close()
    for c in clients:
        counters = counters_of(c)
        assert counters.get("gaps", 0) == counters.get("frames_lost", 0) == 0, counters
        assert counters.get("frames_refused", 0) == 0
