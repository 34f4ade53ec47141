"""Metrics and status of a running instance: a real Prometheus scraping -w 4 under load,
statsd to a UDP listener, and ``gunicorn-barrel status`` (found every way, refused to
another user).

Values that are deterministic are asserted exactly (clients per worker and
transport, emits, store calls, side-process restarts); the others by their
bounds. Every wait polls with a deadline.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.harness import REPO, Client, Gunicorn, free_port, gunicorn, spread_clients, wait_for
from tests.prometheus_server import PrometheusServer

pytestmark = pytest.mark.integration

STREAM, BROADCASTS, INCRS = 1500, 40, 20
# A client that reconnected under load leaves its old session counted until
# engine.io times it out: short pings, so that the counts settle within seconds.
QUICK_PINGS = {"TEST_PING_INTERVAL": "3", "TEST_PING_TIMEOUT": "5"}


def _settle(read: Callable[[], Any], expected: Any, what: str, timeout: float = 30) -> None:
    """Wait until ``read()`` gives ``expected``; fail with the last value seen."""
    seen: list[Any] = []

    def done() -> bool:
        seen[:] = [read()]
        return bool(seen[0] == expected)

    try:
        wait_for(done, timeout, what, interval=0.25)
    except AssertionError:
        last = seen[0] if seen else None
        raise AssertionError(f"{what}: expected {expected!r}, last seen {last!r}") from None


def _clients(srv: Gunicorn) -> tuple[list[Client], list[Client]]:
    """2 WebSocket clients on each worker, in the room "stream", and 1 polling client."""
    ws = spread_clients(srv.url, srv.workers, per_worker=2)
    polling = spread_clients(srv.url, srv.workers, per_worker=1, transports=["polling"])
    for c in ws:
        c.sio.on("seq", c._recorder("seq"))
        assert c.call("join_stream") == "ok"
    return ws, polling


def _load(ws: list[Client], polling: list[Client], during: Callable[[], None] = lambda: None) -> None:
    """A stream of STREAM emits from one worker to the WebSocket clients, BROADCASTS broadcasts and
    INCRS store incrs meanwhile, ``during()`` in the middle; returns once every client got them all."""
    ws[0].call("start_stream", {"tag": "load", "count": STREAM, "rate": 300})
    for i in range(BROADCASTS):
        assert ws[i % len(ws)].call("broadcast", {"i": i}) == "ok"
        if i == BROADCASTS // 2:
            during()
    for i in range(INCRS):
        assert "result" in polling[i % len(polling)].call("store_op", {"op": "incr", "args": ["hits"]})
    for c in ws + polling:
        stream = STREAM if c in ws else 0
        wait_for(lambda c=c, n=stream: len(c.got("seq")) >= n and len(c.got("news")) >= BROADCASTS, 60,
                 f"the whole stream and every broadcast at a client of {c.pid}")
        assert (len(c.got("seq")), len(c.got("news"))) == (stream, BROADCASTS)


@pytest.fixture
def short_base() -> Iterator[str]:
    """A runtime_dir base short enough for unix sockets (<= 60 bytes), that other users may enter."""
    path = tempfile.mkdtemp(prefix="brl-", dir="/tmp" if os.path.isdir("/tmp") else None)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- Prometheus


def test_prometheus_scrapes_every_process_of_a_loaded_instance(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    env = {"BARREL_METRICS_PATH": "/metrics", "BARREL_METRICS_LISTEN": listen, **QUICK_PINGS}
    with gunicorn(workers=4, env=env) as srv:
        ws, polling = _clients(srv)
        prom = PrometheusServer({"barrel": (listen, "/metrics"),
                                 "barrel_app": (f"127.0.0.1:{srv.port}", "/metrics")}, tmp_path)
        try:
            prom.start()
            wait_for(prom.targets_up, 30, "both targets scraped")
            broadcaster = srv.broadcaster_pid()
            _load(ws, polling, during=lambda: os.kill(broadcaster, signal.SIGKILL))
            _check_prometheus(prom, srv)
        finally:
            prom.stop()
            for c in ws + polling:
                c.close()


def _check_prometheus(prom: PrometheusServer, srv: Gunicorn) -> None:
    job = 'job="barrel"'
    workers = {str(p) for p in srv.worker_pids()}
    expected_clients = {(pid, transport): n for pid in workers for transport, n in (("websocket", 2),
                                                                                    ("polling", 1))}
    _settle(lambda: {(r["metric"]["pid"], r["metric"]["transport"]): r["value"]
                     for r in prom.query(f'barrel_clients{{{job},role="worker"}}')},
            expected_clients, "clients per worker and transport")
    _settle(lambda: prom.value(f"sum(barrel_emits_total{{{job}}})"), STREAM + BROADCASTS, "emits")
    _settle(lambda: prom.value('sum(barrel_emits_total{job="barrel_app"})'), STREAM + BROADCASTS,
            "emits on the app's own port")
    _settle(lambda: prom.value(f'sum(barrel_store_operations_total{{{job},op="incr",result="ok"}})'), INCRS,
            "store incrs")
    _settle(lambda: prom.value(f'sum(barrel_store_operation_duration_seconds_count{{{job},op="incr"}})'),
            INCRS, "store incr latencies observed")
    _settle(lambda: {r["metric"]["process"]: r["value"]
                     for r in prom.query(f"barrel_side_process_restarts_total{{{job}}}")},
            {"broadcaster": 1, "store": 0, "exporter": 0}, "side-process restarts")
    _settle(lambda: prom.value(f'sum(barrel_bus_broadcaster_restarts_seen_total{{{job},role="worker"}})'),
            4, "every worker saw the new broadcaster")
    _settle(lambda: prom.value(f"barrel_broadcaster_subscribers{{{job}}}"), 5,
            "the workers and the store subscribed")
    _settle(lambda: {r["metric"]["pid"]: r["value"] for r in prom.query(
        f'barrel_socketio_connects_total{{{job}}} - barrel_socketio_disconnects_total{{{job}}}')},
        dict.fromkeys(workers, 3), "socket.io connections held per worker")
    _settle(lambda: sorted(r["metric"]["role"] for r in prom.query(
        f"barrel_process_resident_memory_bytes{{{job}}}")),
        sorted(["arbiter", "broadcaster", "store", "exporter"] + ["worker"] * 4), "every barrel process")
    for expr in ("barrel_bus_gaps_total", "barrel_bus_frames_lost_total", "barrel_slow_clients_cut_total"):
        assert prom.value(f"sum({expr}{{{job}}})") == 0, expr
    # The 8 WebSocket clients got the stream, all 12 the broadcasts (and answers, connect packets...).
    # Each process writes its numbers about once a second and Prometheus scrapes every second:
    # the last of them reach it shortly after the clients had everything.
    deliveries = STREAM * 8 + BROADCASTS * 12
    wait_for(lambda: (prom.value(f"sum(barrel_deliveries_total{{{job}}})") or 0) >= deliveries, 30,
             f"at least {deliveries} deliveries scraped")
    # Over every call since the start (the calls may all fall between two scrapes: no rate of them).
    latency = prom.value(f"histogram_quantile(0.99, sum by (le) "
                         f"(barrel_store_operation_duration_seconds_bucket{{{job}}}))")
    assert latency is not None and 0 < latency < 5
    # Scraped while the load ran: Prometheus saw the emits counter at several values.
    changes = prom.value(f"changes(sum(barrel_emits_total{{{job}}})[5m:1s])")
    assert changes is not None and changes >= 2


# --------------------------------------------------------------------------- statsd


class StatsdListener:
    """A UDP socket on 127.0.0.1 that keeps every statsd line it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            with self.lock:
                self.lines.extend(data.decode().split("\n"))

    def matching(self, pattern: str) -> list[re.Match[str]]:
        with self.lock:
            return [m for line in self.lines if (m := re.fullmatch(pattern, line))]

    def total(self, name: str, kind: str = "c") -> float:
        return sum(float(m.group(1)) for m in self.matching(re.escape(name) + r":([-\d.e]+)\|" + kind))

    def last(self, name: str) -> float | None:
        found = self.matching(re.escape(name) + r":([-\d.e]+)\|g")
        return float(found[-1].group(1)) if found else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def test_metrics_go_to_statsd_with_gunicorns_prefix() -> None:
    listener = StatsdListener()
    args = ("--statsd-host", f"127.0.0.1:{listener.port}", "--statsd-prefix", "app")
    try:
        with gunicorn(workers=2, extra_args=args, env={"BARREL_STATSD_INTERVAL": "0.5"}) as srv:
            clients = spread_clients(srv.url, 2, per_worker=2)
            try:
                for i in range(10):
                    assert clients[i % 4].call("broadcast", {"i": i}) == "ok"
                for i in range(5):
                    assert "result" in clients[i % 4].call("store_op", {"op": "set", "args": [f"k{i}", i]})
                store = srv.store_pids()[0]
                os.kill(store, signal.SIGKILL)
                _settle(lambda: listener.total("app.barrel.emits"), 10, "emits counted to statsd")
                _settle(lambda: listener.total("app.barrel.store_operations.set.ok"), 5, "store sets")
                _settle(lambda: listener.last("app.barrel.clients.websocket"), 4, "clients gauge")
                _settle(lambda: listener.total("app.barrel.side_process_restarts.store"), 1, "store restart")
                timers = listener.matching(
                    r"app\.barrel\.store_operation_duration\.set:([\d.e-]+)\|ms\|@([\d.e-]+)")
                assert round(sum(1 / float(m.group(2)) for m in timers)) == 5  # statsd counts n calls
                assert all(0 < float(m.group(1)) < 5000 for m in timers)  # milliseconds
                assert listener.matching(r"app\.gunicorn\.requests:.*")  # gunicorn's own, same prefix
                assert not listener.matching(r"barrel\..*")  # nothing without the prefix
            finally:
                for c in clients:
                    c.close()
    finally:
        listener.close()


# --------------------------------------------------------------------------- the status command


def _status(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gunicorn_barrel", "status", *args], capture_output=True,
                          text=True, timeout=60, cwd=REPO, env={**os.environ, **(env or {})})


def test_status_of_a_loaded_instance_found_every_way(short_base: str) -> None:
    pid_file = Path(short_base) / "gunicorn.pid"
    env = {"BARREL_RUNTIME_DIR": short_base}
    with gunicorn(workers=4, env={**env, **QUICK_PINGS}, extra_args=("--pid", str(pid_file))) as srv:
        ws, polling = _clients(srv)
        try:
            broadcaster = srv.broadcaster_pid()
            _load(ws, polling, during=lambda: os.kill(broadcaster, signal.SIGKILL))
            rdir = srv.runtime_dir()
            for how in (("--pid-file", str(pid_file)), ("--bind", f"127.0.0.1:{srv.port}"),
                        ("--runtime-dir", rdir), ("--runtime-dir", short_base), ()):
                done = _status("--json", *how, env=env)
                assert done.returncode == 0, (how, done.stderr)
                assert json.loads(done.stdout)["runtime_dir"] == rdir, how

            def report() -> dict[str, Any]:
                return dict(json.loads(_status("--json", "--runtime-dir", rdir).stdout))

            _settle(lambda: sorted((w["pid"], w["clients"]["websocket"], w["clients"]["polling"])
                                   for w in report()["workers"]),
                    sorted((pid, 2, 1) for pid in srv.worker_pids()), "workers and their clients")
            _settle(lambda: report()["counters"]["barrel_emits_total"], STREAM + BROADCASTS, "emits")
            got = report()
            assert got["arbiter"]["pid"] == srv.pid
            side = {p["name"]: p for p in got["side_processes"]}
            assert (side["broadcaster"]["pid"], side["broadcaster"]["restarts"]) == (srv.broadcaster_pid(), 1)
            assert (side["store"]["pid"], side["store"]["restarts"]) == (srv.store_pids()[0], 0)
            assert side["broadcaster"]["uptime"] < side["store"]["uptime"]
            assert got["federation_links"] == []
            text = _status("--pid-file", str(pid_file)).stdout
            print(text)  # the README shows one
            assert "workers: 4, clients: 12 (websocket 8, polling 4)" in text
            assert re.search(rf"broadcaster\s+{srv.broadcaster_pid()}\s+\S+( \S+)?\s+1\n", text), text
            assert re.search(rf"emits / deliveries\s+{STREAM + BROADCASTS:,} / [\d,]+", text), text
            _check_denied(srv, rdir, pid_file)
        finally:
            for c in ws + polling:
                c.close()
    done = _status("--runtime-dir", short_base)
    assert done.returncode == 1
    assert done.stderr.strip() == f"gunicorn-barrel: no running gunicorn_barrel instance under {short_base}"
    done = _status("--pid-file", str(pid_file))
    assert done.returncode == 1 and "no pid file" in done.stderr


# Run as another user (nobody): the modules are imported first, as root, then the
# process gives up root; what the command reads then is checked by the kernel.
_AS_NOBODY = (
    "import encodings.idna, gettext, locale, os, pwd, sys\n"
    "from gunicorn_barrel import cli\n"
    "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def _check_denied(srv: Gunicorn, rdir: str, pid_file: Path) -> None:
    """The status command run by another user than the instance's is refused, and says why."""
    if os.geteuid() != 0:
        # Without root there is no other user to be: a directory we may not read stands in.
        locked = pid_file.parent / f"barrel-{srv.pid}-locked"
        locked.mkdir(mode=0)
        done = _status("--runtime-dir", str(locked))
        assert done.returncode == 3 and "access denied" in done.stderr, done.stderr
        return
    os.chmod(pid_file, 0o644)  # nobody may read the pid file (in short_base), not the runtime directory
    for how in (("--runtime-dir", rdir), ("--pid-file", str(pid_file)), ("--bind", f"127.0.0.1:{srv.port}")):
        done = subprocess.run([sys.executable, "-c", _AS_NOBODY, "status", *how], capture_output=True,
                              text=True, timeout=60, cwd=REPO)
        assert done.returncode == 3, (how, done.stdout, done.stderr)
        assert done.stderr.startswith("gunicorn-barrel: access denied: "), done.stderr
        assert "run this command as that user (or root)" in done.stderr, done.stderr
        assert "uid 0" in done.stderr or "user root" in done.stderr, done.stderr


def test_a_metrics_listen_address_in_use_stops_gunicorn_with_the_reason() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        srv = Gunicorn(workers=1, env={"BARREL_METRICS_LISTEN": address})
        try:
            with pytest.raises(AssertionError, match="gunicorn exited"):
                srv.start(timeout=30)
            log = srv.log()
            assert f"exporter: cannot listen on {address}" in log, log
            assert "the barrel exporter exited at start" in log, log
        finally:
            srv.stop()


def test_the_metrics_path_answers_get_only_and_leaves_other_paths_to_the_app() -> None:
    with gunicorn(workers=2, env={"BARREL_METRICS_PATH": "/internal/metrics"}) as srv:
        got = requests.get(srv.url + "/internal/metrics", timeout=5)
        assert got.status_code == 200 and got.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "barrel_clients{" in got.text and 'role="arbiter"' in got.text
        assert requests.post(srv.url + "/internal/metrics", timeout=5).status_code == 405
        assert requests.get(srv.url + "/internal/metricsx", timeout=5).text.startswith("plain route")
    with gunicorn(workers=1) as srv:  # off by default
        assert requests.get(srv.url + "/metrics", timeout=5).text.startswith("plain route")
