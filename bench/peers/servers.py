"""The servers of the peer benchmark: start one, list its processes, stop it by pid.

Every server runs the same app logic (bench/peers/app.py for Python,
bench/js/node_server.mjs for Node) on a free loopback port.
"""
from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import EXAMPLE_CONF, REPO, Gunicorn, children_of, free_port, pid_alive
from tests.json_lines import JsonLinesProcess
from tests.node_clients import NODE

PLAIN_CONF = REPO / "bench" / "plain_conf.py"
NODE_SERVER = REPO / "bench" / "js" / "node_server.mjs"
APP = "bench.peers.app:wsgi"
# gunicorn's default of 1,000 connections per worker is below the idle-clients figure.
WORKER_CONNECTIONS = ("--worker-connections", "20000")


@dataclass
class Server:
    """One server under test: what the table calls it, and how to run it."""

    name: str
    kind: str  # "barrel", "plain", "redis" (python-socketio managers) or "node"
    processes: int  # gunicorn workers or node processes serving clients
    bus: str  # how a broadcast reaches the other workers' clients
    url: str = ""
    worker_pids: list[int] = field(default_factory=list)
    _pids: Callable[[], dict[str, int]] = lambda: {}
    _stop: Callable[[], None] = lambda: None

    def pids(self) -> dict[str, int]:
        """Every process of this server by role (arbiter, workers, side processes), for RSS and CPU."""
        return self._pids()

    def stop(self) -> None:
        self._stop()


def start_gunicorn(server: Server, log_dir: Path, redis_url: str | None = None,
                   redis_pid: int | None = None) -> Server:
    env = {"BENCH_MANAGER": server.kind, **({"BENCH_REDIS_URL": redis_url} if redis_url else {})}
    conf = EXAMPLE_CONF if server.kind == "barrel" else PLAIN_CONF
    srv = Gunicorn(app=APP, workers=server.processes, extra_args=WORKER_CONNECTIONS, conf=conf, env=env,
                   log_path=log_dir / f"{server.name.replace(' ', '_')}.log")
    server._stop = srv.stop
    srv.start()
    server.url = srv.url
    server.worker_pids = sorted(srv.worker_pids())

    def pids() -> dict[str, int]:
        return {**gunicorn_processes(srv), **({"redis-server": redis_pid} if redis_pid is not None else {})}

    server._pids = pids
    return server


def gunicorn_processes(srv: Gunicorn) -> dict[str, int]:
    """The arbiter and its children, named by role."""
    side = {pid: "broadcaster" for pid in srv.broadcaster_pids()}
    side.update({pid: "store" for pid in srv.store_pids()})
    named = {"arbiter": srv.pid}
    for pid in children_of(srv.pid):
        named[f"{side.get(pid, 'worker')} {pid}"] = pid
    return named


def start_node(server: Server, log_dir: Path) -> Server:
    assert NODE is not None, "needs `node` on PATH"
    port = free_port()
    proc = JsonLinesProcess([NODE, str(NODE_SERVER), str(port), str(server.processes)],
                            log_dir / f"{server.name.replace(' ', '_')}.log")
    started = {proc.proc.pid}

    def stop() -> None:
        started.update(children_of(proc.proc.pid))
        for pid in started:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.proc.wait(5)

    server._stop = stop
    ready = proc.expect("ready", 30)
    server.url = f"http://127.0.0.1:{port}"
    server.worker_pids = sorted(ready["pids"])
    started.update(server.worker_pids)
    primary = {"primary": proc.proc.pid} if server.processes > 1 else {}
    server._pids = lambda: {**primary, **{f"worker {pid}": pid for pid in server.worker_pids}}
    return server


def stop_quietly(server: Server) -> None:
    try:
        server.stop()
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"stopping {server.name}: {exc}")
