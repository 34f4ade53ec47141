"""Every config in example_confs/ runs under real gunicorn and does what it says."""
from __future__ import annotations

import os
import signal
import uuid

import pytest

from demos.chat.announcer import announcements
from tests.chat_client import ChatClient
from tests.harness import REPO, Gunicorn, children_of, pid_alive, spread, spread_clients, wait_for
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration


def test_every_example_conf_is_tested() -> None:
    confs = sorted(p.name for p in (REPO / "example_confs").glob("*.py"))
    # federation_*.py are run by tests/test_federation.py (three linked instances each).
    assert confs == ["barrel_conf.py", "federation_chain.py", "federation_mesh.py", "federation_star.py",
                     "redis_bus.py", "with_own_hooks.py", "with_side_process.py"]


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


SIDE_CONF = REPO / "example_confs" / "with_side_process.py"
ANNOUNCER = "demos.chat.announcer"
ANNOUNCEMENTS = announcements(str(REPO / "demos" / "chat" / "announcements.txt"))


class Listener(ChatClient):
    """A chat client that records its hello and the announcements it receives."""

    def __init__(self, url: str) -> None:
        super().__init__(url, transports=("websocket",))

    def from_announcer(self, pid: int) -> list[int]:
        return [a["n"] for a in self.got("announcement") if a["pid"] == pid]


def _announcer(srv: Gunicorn, other_than: int | None = None) -> int:
    pids = wait_for(lambda: [p for p in srv.side_process_pids(ANNOUNCER) if p != other_than], 10,
                    "the announcer running")
    assert len(pids) == 1, pids
    return int(pids[0])


def _announced_to_all(listeners: list[Listener], pid: int) -> None:
    for listener in listeners:
        wait_for(lambda c=listener: len(c.from_announcer(pid)) >= 3, 15,
                 f"announcements from {pid} at the client on worker {listener.pid}")
        # once each, none missing between (python-socketio's client runs each handler in a
        # thread of its own, so the order is tested with node clients in test_side_processes.py)
        got = sorted(listener.from_announcer(pid))
        assert got == list(range(got[0], got[0] + len(got)))


def _side_conf_server(workers: int = 2) -> Gunicorn:
    return Gunicorn(app="demos.chat.app:wsgi", workers=workers, conf=SIDE_CONF,
                    env={"CHAT_ANNOUNCE_EVERY": "0.1"})


def test_with_side_process_announces_to_every_worker_across_sigkill_hup_and_term() -> None:
    srv = _side_conf_server().start()
    listeners: list[Listener] = []
    try:
        pid = _announcer(srv)
        log = srv.log()
        assert log.index(f"side process announcer started (pid: {pid})") < log.index("Booting worker")
        wait_for(lambda: f"[{pid}] [INFO] announcer: one announcement every 0.1 s, 3 in turn" in srv.log(),
                 10, "the announcer's log line in gunicorn's log")
        listeners = spread(lambda: Listener(srv.url), 2, per_worker=1)
        _announced_to_all(listeners, pid)
        assert {a["text"] for c in listeners for a in c.got("announcement")} <= set(ANNOUNCEMENTS)
        # The barrel event: every worker keeps the latest announcement for its new clients.
        late = spread(lambda: Listener(srv.url), 2, per_worker=1)
        listeners += late
        assert all(c.hello["announcement"]["pid"] == pid for c in late)

        os.kill(pid, signal.SIGKILL)
        pid = _announcer(srv, other_than=pid)
        _announced_to_all(listeners, pid)
        assert "side process announcer (pid: " in srv.log() and "died; restarting" in srv.log()

        old_workers = set(srv.worker_pids())
        os.kill(srv.pid, signal.SIGHUP)  # on_reload="keep"
        wait_for(lambda: not set(srv.worker_pids()) & old_workers, 30, "workers replaced after HUP")
        srv.wait_workers_ready()
        srv.remember_pids()
        assert srv.side_process_pids(ANNOUNCER) == [pid]
        for c in listeners:
            c.close()
        listeners = spread(lambda: Listener(srv.url), 2, per_worker=1)
        _announced_to_all(listeners, pid)

        family = children_of(srv.pid)
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
        wait_for(lambda: not any(pid_alive(p) for p in family), 10, "no process left")
        log = srv.log()
        assert f"[{pid}] [INFO] announcer: stopped after " in log
        assert log.index("side process announcer stopped") < log.index("barrel broadcaster stopped")
    finally:
        for c in listeners:
            c.close()
        srv.stop()


def test_with_side_process_the_announcer_dies_with_a_sigkilled_arbiter() -> None:
    srv = _side_conf_server(workers=1).start()
    try:
        pid = _announcer(srv)
        os.kill(srv.pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 5, "the announcer to die with the arbiter")
    finally:
        srv.stop()


def _pipes(pid: int) -> set[str]:
    held = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("pipe:"):
            held.add(target)
    return held


def test_workers_hold_no_side_process_output_pipe() -> None:
    # Only the arbiter reads them: with a copy in a worker, a side process that
    # outlives a SIGKILLed arbiter blocks on a full pipe rather than getting EPIPE.
    srv = _side_conf_server(workers=2).start()
    try:
        outputs = set()
        for pid in [_announcer(srv), srv.broadcaster_pid(), *srv.store_pids()]:
            outputs |= {os.readlink(f"/proc/{pid}/fd/{n}") for n in (1, 2)}
        assert all(o.startswith("pipe:") for o in outputs), outputs
        assert outputs <= _pipes(srv.pid)  # the arbiter's relays read them
        workers = srv.worker_pids()
        assert len(workers) == 2
        for worker in workers:
            assert not _pipes(worker) & outputs, f"worker {worker} holds {_pipes(worker) & outputs}"
    finally:
        srv.stop()
