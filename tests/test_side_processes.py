"""Side processes of the user's own (hooks.SideProcess) under real gunicorn.

Each test writes a config of its own in tmp_path (tests.apps.sio_app's barrel
worker plus the declared side processes), starts gunicorn -w 2, and looks at
the processes in /proc, at gunicorn's log, and at what socket.io clients on
every worker receive from the side process: tests/apps/side_counter.py emits
"seq" {"tag": "side-<pid>", "n": 1, 2, ...}, which node socket.io-client
clients (tests/js/sio_client.mjs) count with duplicates and breaks in order
(python-socketio's client runs each handler in a thread of its own: no order).
The example conf with the chat's announcer is in tests/test_example_confs.py.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.harness import EXAMPLE_CONF, Gunicorn, children_of, pid_alive, processes_matching, wait_for
from tests.node_clients import NodeClients, spread_node_clients
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

WORKERS = 2
COUNTER = "tests.apps.side_counter"


def write_conf(path: Path, *declarations: str) -> Path:
    path.write_text(
        "from gunicorn_barrel import hooks\n"
        'worker_class = "gunicorn_barrel.workers.BarrelWorker"\n'
        "hooks.install(globals(), side_processes=[\n"
        + "".join(f"    {d},\n" for d in declarations)
        + "])\n")
    return path


def counter(name: str, *options: str, **fields: str) -> str:
    args = ", ".join(repr(o) for o in options)
    extra = "".join(f", {key}={value}" for key, value in fields.items())
    return f"hooks.SideProcess({name!r}, module={COUNTER!r}, args=[{args}]{extra})"


def one_pid(srv: Gunicorn, text: str, other_than: int | None = None) -> int:
    """The pid of the one side process whose command line holds ``text`` (not ``other_than``)."""
    pids = wait_for(lambda: [p for p in srv.side_process_pids(text) if p != other_than], 10,
                    f"a side process running {text}")
    assert len(pids) == 1, pids
    return int(pids[0])


def emitted(srv: Gunicorn, pid: int) -> int:
    """The last number side counter ``pid`` said it emitted (it says so every 20th)."""
    said = re.findall(rf"side counter {pid} emitted (\d+)", srv.log())
    return int(said[-1]) if said else 0


@contextmanager
def receivers(srv: Gunicorn, tmp_path: Path, workers: int = WORKERS) -> Iterator[NodeClients]:
    """Four node socket.io clients held by ``workers`` workers."""
    with spread_node_clients(srv, "websocket", 4, tmp_path / f"node-{srv.port}.stderr", workers) as (js, _):
        yield js


def streams_from(js: NodeClients, pid: int) -> list[dict[str, Any]]:
    """What each client received of side counter ``pid``: count, last, outOfOrder, duplicates."""
    empty = {"count": 0, "last": 0, "outOfOrder": 0, "duplicates": 0}
    return [s.get(f"side-{pid}", empty) for s in js.ask("streams?", "streams")["streams"]]


def wait_heard(js: NodeClients, pid: int, beyond: int = 0) -> None:
    """Until every client got a number past ``beyond`` from side counter ``pid``."""
    wait_for(lambda: all(s["count"] and s["last"] > beyond for s in streams_from(js, pid)), 20,
             f"numbers past {beyond} from side process {pid} at every client", interval=0.1)


def assert_once_in_order(js: NodeClients, pid: int) -> None:
    """Each client got one unbroken run: no number twice, no break but where it joined."""
    for s in streams_from(js, pid):
        assert s["duplicates"] == 0 and s["outOfOrder"] <= 1, s


def status_of(srv: Gunicorn, name: str) -> tuple[int, int] | None:
    """(pid, restarts) of side process ``name`` as ``gunicorn-barrel status --json`` reports it."""
    done = subprocess.run([sys.executable, "-m", "gunicorn_barrel", "status", "--json",
                           "--runtime-dir", srv.runtime_dir()], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    found = [p for p in json.loads(done.stdout)["side_processes"] if p["name"] == name]
    return (found[0]["pid"], found[0]["restarts"]) if found else None


@pytest.fixture
def started() -> Iterator[list[Gunicorn]]:
    """The instances a test starts, stopped at its end."""
    servers: list[Gunicorn] = []
    yield servers
    for srv in servers:
        srv.stop()


def start(servers: list[Gunicorn], conf: Path, workers: int = WORKERS, env: dict[str, str] | None = None
          ) -> Gunicorn:
    srv = Gunicorn(workers=workers, conf=conf, env=env)
    servers.append(srv)
    return srv.start()


def test_emits_reach_every_worker_once_in_order_across_a_broadcaster_restart(
        tmp_path: Path, started: list[Gunicorn]) -> None:
    srv = start(started, write_conf(tmp_path / "conf.py", counter("counter")))
    pid = one_pid(srv, COUNTER)
    log = srv.log()
    # started before the workers, its output in gunicorn's log, prefixed with its name
    assert log.index(f"side process counter started (pid: {pid})") < log.index("Booting worker")
    wait_for(lambda: f"[{pid}] [INFO] counter: side counter {pid} on stdout" in srv.log(), 10, "stdout")
    assert f"[{pid}] [ERROR] counter: side counter {pid} on stderr" in srv.log()
    with receivers(srv, tmp_path) as js:
        wait_heard(js, pid)
        # Frames pushed to a frozen broadcaster wait in its socket and die with
        # it: they arrive only if the side process sends them again.
        broadcaster = srv.broadcaster_pid()
        os.kill(broadcaster, signal.SIGSTOP)
        frozen_at = emitted(srv, pid)
        wait_for(lambda: emitted(srv, pid) >= frozen_at + 40, 10, "emits while the broadcaster is frozen")
        os.kill(broadcaster, signal.SIGKILL)
        wait_for(lambda: [p for p in srv.broadcaster_pids() if p != broadcaster], 10, "a new broadcaster")
        wait_heard(js, pid, beyond=emitted(srv, pid) + 20)
        assert_once_in_order(js, pid)
    assert one_pid(srv, COUNTER) == pid  # it never noticed


def test_a_sigkilled_side_process_is_restarted_and_emits_again(tmp_path: Path,
                                                               started: list[Gunicorn]) -> None:
    srv = start(started, write_conf(tmp_path / "conf.py", counter("counter")))
    with receivers(srv, tmp_path) as js:
        pid = one_pid(srv, COUNTER)
        for _ in range(2):
            wait_heard(js, pid)
            os.kill(pid, signal.SIGKILL)
            new = one_pid(srv, COUNTER, other_than=pid)
            assert not pid_alive(pid)
            pid = new
        wait_heard(js, pid)
        assert_once_in_order(js, pid)
        # The status command (and so the metrics: the same snapshot) shows it with its restarts.
        wait_for(lambda: status_of(srv, "counter") == (pid, 2), 10, "the status command showing it")
    assert srv.log().count("side process counter (pid: ") == 2
    assert "died; restarting" in srv.log()


def _hup_and_wait_for_new_workers(srv: Gunicorn) -> None:
    old = set(srv.worker_pids())
    os.kill(srv.pid, signal.SIGHUP)
    wait_for(lambda: len(set(srv.worker_pids()) - old) == WORKERS and not set(srv.worker_pids()) & old,
             30, "workers replaced after HUP")
    srv.wait_workers_ready()
    srv.remember_pids()


def test_hup_keeps_or_restarts_each_side_process_as_declared(tmp_path: Path, started: list[Gunicorn]) -> None:
    conf = write_conf(tmp_path / "conf.py", counter("kept", "--every", "0.05"),
                      counter("renewed", "--every", "0.06", on_reload="'restart'"))
    srv = start(started, conf)
    kept, renewed = one_pid(srv, "--every 0.05"), one_pid(srv, "--every 0.06")
    _hup_and_wait_for_new_workers(srv)
    again = one_pid(srv, "--every 0.06", other_than=renewed)
    wait_for(lambda: not pid_alive(renewed), 10, "the renewed side process's old pid gone")
    assert srv.side_process_pids("--every 0.05") == [kept]
    srv.remember_pids()
    assert f"side process renewed (pid: {renewed}) stopped for the reload" in srv.log()
    with receivers(srv, tmp_path) as js:
        wait_heard(js, kept)
        wait_heard(js, again)


def test_hup_applies_a_changed_list_of_side_processes(tmp_path: Path, started: list[Gunicorn]) -> None:
    def sleeper(name: str, seconds: str) -> str:
        return f"hooks.SideProcess({name!r}, command=['sleep', {seconds!r}])"

    conf = write_conf(tmp_path / "conf.py", sleeper("changed", "601"), sleeper("removed", "602"),
                      sleeper("same", "603"))
    srv = start(started, conf)
    before = {s: one_pid(srv, f"sleep {s}") for s in ("601", "602", "603")}
    write_conf(conf, sleeper("changed", "604"), sleeper("same", "603"), sleeper("added", "605"))
    os.kill(srv.pid, signal.SIGHUP)
    after = {s: one_pid(srv, f"sleep {s}") for s in ("604", "605")}
    wait_for(lambda: not pid_alive(before["601"]) and not pid_alive(before["602"]), 10,
             "the changed and the removed side processes ended")
    assert srv.side_process_pids("sleep 603") == [before["603"]]
    srv.remember_pids()
    log = srv.log()
    assert "side process removed is no longer declared; stopping it" in log
    assert f"side process changed (pid: {before['601']}) stopped for its changed declaration" in log
    assert f"side process added started (pid: {after['605']})" in log


def test_term_stops_side_processes_and_what_they_started(tmp_path: Path, started: list[Gunicorn]) -> None:
    conf = write_conf(tmp_path / "conf.py", counter("counter"),
                      "hooks.SideProcess('shell', command=['sh', '-c', 'sleep 606 & wait'])")
    srv = start(started, conf)
    family = [one_pid(srv, COUNTER), one_pid(srv, "sleep 606 & wait")]
    grandchild = wait_for(lambda: children_of(family[1]), 10, "the shell's sleep")
    family += grandchild
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(30) == 0
    try:
        wait_for(lambda: not any(pid_alive(p) for p in family), 5, "no side process left")
    finally:
        for pid in grandchild:  # not the arbiter's child: Gunicorn.stop() does not know it
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    log = srv.log()
    assert "side process counter stopped, 0 restart(s)" in log and "side process shell stopped" in log
    # the user's stopped before barrel's own
    assert log.index("side process counter stopped") < log.index("barrel broadcaster stopped")


def test_side_processes_die_with_a_sigkilled_arbiter(tmp_path: Path, started: list[Gunicorn]) -> None:
    conf = write_conf(tmp_path / "conf.py", counter("counter"),
                      "hooks.SideProcess('sleeper', command=['sleep', '607'])")
    srv = start(started, conf)
    side = [one_pid(srv, COUNTER), one_pid(srv, "sleep 607")]
    os.kill(srv.pid, signal.SIGKILL)
    wait_for(lambda: not any(pid_alive(p) for p in side), 5, "the side processes to die with the arbiter")


def test_ready_timeout_waits_for_the_ready_mark(tmp_path: Path, started: list[Gunicorn]) -> None:
    conf = write_conf(tmp_path / "conf.py", counter("counter", "--ready", ready_timeout="10"))
    srv = start(started, conf)
    pid = one_pid(srv, COUNTER)
    log = srv.log()
    assert log.index(f"side process counter started (pid: {pid})") < log.index("Listening at")


def test_a_side_process_that_is_never_ready_stops_gunicorns_start(tmp_path: Path) -> None:
    conf = write_conf(tmp_path / "conf.py", "hooks.SideProcess('late', command=['sleep', '608'], "
                      "ready_timeout=0.5)")
    srv = Gunicorn(workers=1, conf=conf)
    proc = subprocess.run(srv.cmd, capture_output=True, text=True, timeout=30, env=srv.env)
    assert proc.returncode != 0
    assert "the side process late did not start within 0.5 s" in proc.stdout + proc.stderr
    assert processes_matching("sleep 608") == []


def test_on_a_redis_bus_a_side_process_reaches_every_instance_sharing_it(
        tmp_path: Path, started: list[Gunicorn], redis_server: RedisServer) -> None:
    env = {"BARREL_BUS": redis_server.url, "BARREL_BUS_NAMESPACE": "side"}
    srv = start(started, write_conf(tmp_path / "conf.py", counter("counter")), env=env)
    other = start(started, EXAMPLE_CONF, workers=1, env=env)  # no side process of its own
    assert srv.broadcaster_pids() == []
    pid = one_pid(srv, COUNTER)
    with receivers(srv, tmp_path) as here, receivers(other, tmp_path, workers=1) as there:
        for js in (here, there):
            wait_heard(js, pid, beyond=emitted(srv, pid) + 20)
            assert_once_in_order(js, pid)


def test_on_a_redis_bus_workers_cut_off_get_what_they_missed_replayed_by_the_side_process(
        tmp_path: Path, started: list[Gunicorn], redis_server: RedisServer) -> None:
    # A generous gap_timeout: on this shared machine recovery may take a while.
    env = {"BARREL_BUS": redis_server.url, "BARREL_BUS_NAMESPACE": "cut", "BARREL_GAP_TIMEOUT": "20"}
    srv = start(started, write_conf(tmp_path / "conf.py", counter("counter")), env=env)
    pid = one_pid(srv, COUNTER)
    with receivers(srv, tmp_path) as js:
        wait_heard(js, pid)
        # Redis stays up and keeps publishing; the workers' subscriptions (and the side
        # process's own, for requests) are cut again and again while it emits.
        cut_until = time.monotonic() + 1.5
        while time.monotonic() < cut_until:
            redis_server.client.client_kill_filter(_type="pubsub")
            time.sleep(0.01)  # an outage pattern, not a synchronization
        wait_heard(js, pid, beyond=emitted(srv, pid) + 20)
        assert_once_in_order(js, pid)
    assert re.search(r"bus: lost the subscription to Redis", srv.log())  # the workers were cut off
