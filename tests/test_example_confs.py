"""Every config in example_confs/ runs under real gunicorn and does what it says."""
from __future__ import annotations

import signal
import uuid

import pytest

from tests.harness import REPO, Gunicorn, spread_clients, wait_for
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration


def test_every_example_conf_is_tested() -> None:
    confs = sorted(p.name for p in (REPO / "example_confs").glob("*.py"))
    # federation_*.py are run by tests/test_federation.py (three linked instances each).
    assert confs == ["barrel_conf.py", "federation_chain.py", "federation_mesh.py", "federation_star.py",
                     "redis_bus.py", "with_own_hooks.py"]


def test_barrel_conf_lets_the_command_line_win() -> None:
    # the file says workers = 4; -w 2 on the command line wins
    srv = Gunicorn(workers=2).start()
    try:
        assert len(srv.worker_pids()) == 2
    finally:
        srv.stop()


def test_with_own_hooks_runs_user_and_barrel_hooks() -> None:
    srv = Gunicorn(workers=2, conf=REPO / "example_confs" / "with_own_hooks.py").start()
    try:
        for pid in srv.worker_pids():
            wait_for(lambda pid=pid: f"own hook: post_worker_init ran in {pid}" in srv.log(), 10,
                     "the user's post_worker_init")
            assert f"own hook: post_fork ran for worker {pid}" in srv.log()
        clients = spread_clients(srv.url, 2, per_worker=1)
        try:
            token = uuid.uuid4().hex
            clients[0].call("broadcast", {"token": token})
            for c in clients:
                wait_for(lambda c=c: {"token": token} in c.got("news"), 10, "broadcast")
        finally:
            for c in clients:
                c.close()
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
        log = srv.log()
        assert "own hook: on_exit ran in the arbiter" in log
        # the user's on_exit ran before barrel stopped the broadcaster
        assert log.index("own hook: on_exit ran") < log.index("barrel broadcaster stopped")
    finally:
        srv.stop()


def test_redis_bus_joins_two_instances(redis_server: RedisServer) -> None:
    # The file's namespace ("chat") is used; BARREL_BUS points it at the test's own Redis.
    conf = REPO / "example_confs" / "redis_bus.py"
    servers = [Gunicorn(workers=2, conf=conf, env={"BARREL_BUS": redis_server.url}) for _ in range(2)]
    pubsub = redis_server.client.pubsub()
    clients = []
    try:
        for srv in servers:
            srv.start()
            assert srv.broadcaster_pids() == [] and srv.store_pids() == []
        clients = [c for srv in servers for c in spread_clients(srv.url, 2, per_worker=1)]
        pubsub.psubscribe("barrel:bus:chat:*")
        wait_for(lambda: pubsub.get_message(timeout=0.1) is not None, 10, "psubscribe confirmation")
        token = uuid.uuid4().hex
        clients[0].call("broadcast", {"token": token})
        for c in clients:  # on both instances, once (the fence sent after it arrived after it)
            wait_for(lambda c=c: {"token": token} in c.got("news"), 10, f"broadcast at {c.pid}")
        fence = uuid.uuid4().hex
        clients[-1].call("broadcast", {"token": fence})
        for c in clients:
            wait_for(lambda c=c: {"token": fence} in c.got("news"), 10, "fence")
            assert c.got("news").count({"token": token}) == 1
        seen = wait_for(lambda: pubsub.get_message(timeout=0.1), 10, "the frame on Redis")
        assert seen["channel"] == b"barrel:bus:chat:sio:socketio"
    finally:
        pubsub.close()
        for c in clients:
            c.close()
        for srv in servers:
            srv.stop()
