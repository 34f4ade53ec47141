"""The broadcaster's life with the arbiter: start, supervision, signals, clean exit.

Each test starts its own gunicorn (-w 4 unless said otherwise), kills real
processes and looks at /proc for what is left.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import zmq

from tests.harness import (
    BROADCASTER_MODULE,
    Client,
    Gunicorn,
    children_of,
    gunicorn,
    pid_alive,
    spread_clients,
    wait_for,
)

pytestmark = pytest.mark.integration

WORKERS = 4


def _broadcast_reaches_all(clients: list[Client], timeout: float = 15) -> None:
    """Broadcast until every client got one copy (frames sent while the bus reconnects may be lost)."""
    token = uuid.uuid4().hex

    def all_got_it() -> bool:
        clients[0].call("broadcast", {"token": token})
        return all({"token": token} in c.got("news") for c in clients)

    wait_for(all_got_it, timeout, "a broadcast at every client", interval=0.2)


def _close(clients: list[Client]) -> None:
    for c in clients:
        c.close()


def test_sigterm_stops_everything_and_removes_runtime_dir() -> None:
    srv = Gunicorn(workers=WORKERS).start()
    try:
        runtime_dir = srv.runtime_dir()
        assert oct(os.stat(runtime_dir).st_mode & 0o777) == "0o700"
        family = children_of(srv.pid)
        assert len(family) == WORKERS + 2  # and the broadcaster and the store
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
        wait_for(lambda: not any(pid_alive(p) for p in family), 10, "no process left")
        assert not os.path.exists(runtime_dir)
        assert "barrel broadcaster stopped" in srv.log()
    finally:
        srv.stop()


def test_broadcaster_sigkilled_is_restarted_and_broadcasts_work_again() -> None:
    with gunicorn(workers=WORKERS) as srv:
        clients = spread_clients(srv.url, WORKERS, per_worker=1)
        try:
            _broadcast_reaches_all(clients)
            for _ in range(2):
                old = srv.broadcaster_pid()
                killed_at = time.monotonic()
                os.kill(old, signal.SIGKILL)
                new = wait_for(lambda old=old: [p for p in srv.broadcaster_pids() if p != old], 5,
                               "a new broadcaster")
                print(f"broadcaster back after {time.monotonic() - killed_at:.3f} s")
                assert len(new) == 1
                _broadcast_reaches_all(clients)
            assert all(c.sio.connected for c in clients)
        finally:
            _close(clients)
        assert "barrel broadcaster" in srv.log() and "died; restarting" in srv.log()


def test_arbiter_sigkilled_leaves_no_barrel_process() -> None:
    srv = Gunicorn(workers=WORKERS).start()
    try:
        bcast = srv.broadcaster_pid()
        store = srv.store_pids()
        assert len(store) == 1
        runtime_dir = srv.runtime_dir()
        workers = srv.worker_pids()
        os.kill(srv.pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(bcast), 2, "the broadcaster to die with the arbiter")
        wait_for(lambda: not pid_alive(store[0]), 2, "the store to die with the arbiter")
        wait_for(lambda: not any(pid_alive(p) for p in workers), 10, "workers to die with the arbiter")
        try:
            wait_for(lambda: not os.path.exists(runtime_dir), 5, "the runtime dir removed")
        except AssertionError as exc:
            left = [os.path.join(d, f) for d, _dirs, files in os.walk(runtime_dir) for f in files]
            raise AssertionError(f"{exc}; it still holds {left}\n{srv.log()[-3000:]}") from None
    finally:
        srv.stop()


def test_hup_keeps_exactly_one_broadcaster_and_the_bus_works() -> None:
    with gunicorn(workers=WORKERS) as srv:
        bcast = srv.broadcaster_pid()
        old_workers = set(srv.worker_pids())
        os.kill(srv.pid, signal.SIGHUP)
        wait_for(lambda: len(set(srv.worker_pids()) - old_workers) == WORKERS
                 and not set(srv.worker_pids()) & old_workers, 30, "workers replaced after HUP")
        assert not set(srv.wait_workers_ready()) & old_workers
        srv.remember_pids()
        assert srv.broadcaster_pids() == [bcast]
        # long-polling sessions route to the new workers too
        clients = spread_clients(srv.url, WORKERS, per_worker=1, transports=["polling"])
        try:
            _broadcast_reaches_all(clients)
        finally:
            _close(clients)


def test_worker_restarts_keep_one_broadcaster() -> None:
    with gunicorn(workers=2, extra_args=("--max-requests", "5")) as srv:
        import requests

        bcast = srv.broadcaster_pid()
        first = set(srv.worker_pids())
        for _ in range(40):
            requests.get(srv.url + "/plain", timeout=5)
        wait_for(lambda: set(srv.worker_pids()) - first, 20, "a worker restarted by max_requests")
        srv.wait_workers_ready()
        srv.remember_pids()
        assert srv.broadcaster_pids() == [bcast]
        clients = spread_clients(srv.url, 2, per_worker=1)
        try:
            _broadcast_reaches_all(clients)
        finally:
            _close(clients)


def _new_master(old_master: int) -> int | None:
    for pid in children_of(old_master):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().decode(errors="replace")
        except OSError:
            continue
        if BROADCASTER_MODULE not in cmd and children_of(pid):
            return pid
    return None


def test_usr2_upgrade_then_old_master_stop_leaves_one_broadcaster() -> None:
    srv = Gunicorn(workers=2).start()
    new_master: int | None = None
    try:
        old_bcast = srv.broadcaster_pid()
        os.kill(srv.pid, signal.SIGUSR2)
        new_master = wait_for(lambda: _new_master(srv.pid), 30, "the upgraded master")
        assert new_master is not None
        wait_for(lambda: len(children_of(new_master)) == 4, 30, "new master's workers, broadcaster, store")
        srv.started_pids.update(children_of(new_master))
        assert srv.proc is not None
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(30)
        wait_for(lambda: not pid_alive(old_bcast), 10, "old broadcaster gone")
        new_bcasts = [p for p in children_of(new_master) if BROADCASTER_MODULE in _cmd(p)]
        assert len(new_bcasts) == 1 and new_bcasts[0] != old_bcast
        clients = spread_clients(srv.url, 2, per_worker=1)
        try:
            _broadcast_reaches_all(clients)
        finally:
            _close(clients)
    finally:
        if new_master is not None and pid_alive(new_master):
            srv.started_pids.update(children_of(new_master))
            os.kill(new_master, signal.SIGTERM)
            wait_for(lambda: not pid_alive(new_master), 30, "new master stopped")
        srv.stop()


def _cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def test_rogue_frames_on_the_ipc_socket_are_refused() -> None:
    with gunicorn(workers=2) as srv:
        clients = spread_clients(srv.url, 2, per_worker=1)
        try:
            ctx = zmq.Context()
            rogue = ctx.socket(zmq.PUSH)
            rogue.setsockopt(zmq.LINGER, 1000)
            rogue.connect("ipc://" + str(Path(srv.runtime_dir()) / "pull.sock"))
            for parts in ([b"garbage"], [b"sio:socketio", b"BRL\x09" + b"\0" * 40],
                          [b"sio:socketio", b"\xff" * 100], [b"", b""]):
                rogue.send_multipart(parts)
            rogue.close()
            ctx.term()
            _broadcast_reaches_all(clients)
            assert srv.broadcaster_pids() and all(c.sio.connected for c in clients)
        finally:
            _close(clients)
        wait_for(lambda: "refused a frame" in srv.log(), 5, "refusals logged")


def test_oversized_emit_raises_at_the_caller_and_reaches_no_one() -> None:
    with gunicorn(workers=2, env={"BARREL_MAX_FRAME_SIZE": "65536"}) as srv:
        clients = spread_clients(srv.url, 2, per_worker=1)
        try:
            assert clients[0].call("broadcast_big", 1000) == "ok"
            reply = clients[0].call("broadcast_big", 100_000)
            assert "over the limit of 65536 bytes" in reply["error"]
            assert clients[0].call("broadcast_big", 1000) == "ok"
            for c in clients:
                wait_for(lambda c=c: len(c.got("news")) == 2, 10, "the small broadcasts")
                assert c.got("news") == [{"big": b"x" * 1000}] * 2
            for c in clients:  # the refused emit used up no sequence number
                assert c.call("bus_counters")["counters"].get("gaps", 0) == 0
        finally:
            _close(clients)


def _run_until_exit(args: list[str], env: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    srv = Gunicorn(workers=1, env=env)
    cmd = srv.cmd[:-1] + args + [srv.cmd[-1]]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=srv.env)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"BARREL_MAX_FRAME_SIZE": "lots"}, "invalid barrel setting max_frame_size (BARREL_MAX_FRAME_SIZE)"),
        ({"BARREL_WEBSOCKET_DEFLATE": "maybe"}, "invalid barrel setting websocket_deflate"),
        ({"BARREL_FRAME_SIZE": "1"}, "unknown barrel setting 'frame_size'"),
    ],
)
def test_bad_settings_stop_gunicorn_with_a_clear_error(env: dict[str, str], expected: str) -> None:
    code, output = _run_until_exit([], env)
    assert code != 0
    assert expected in output


def test_barrel_worker_without_hooks_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "conf.py"
    conf.write_text('worker_class = "gunicorn_barrel.workers.BarrelWorker"\n')
    srv = Gunicorn(workers=1, conf=conf)
    proc = subprocess.run(srv.cmd, capture_output=True, text=True, timeout=30, env=srv.env)
    assert proc.returncode != 0
    assert "BarrelWorker needs the barrel hooks" in proc.stdout + proc.stderr
