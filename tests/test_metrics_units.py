"""The metrics layer without gunicorn: the catalog's conventions, recorders, snapshot files,
the Prometheus exposition, the statsd lines, finding an instance and the status report.

The real thing (gunicorn -w 4, a real Prometheus, a statsd listener, the
status command) is tests/test_metrics.py.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gunicorn_barrel.metrics import catalog, exposition, locate, procfs, recorder, snapshots, statsd, status
from gunicorn_barrel.runtime import endpoints
from tests.harness import wait_for

# --------------------------------------------------------------------------- the catalog


def test_every_metric_follows_the_prometheus_conventions() -> None:
    names = [m.name for m in catalog.METRICS]
    assert len(names) == len(set(names))
    for m in catalog.METRICS:
        assert re.fullmatch(r"barrel_[a-z0-9_]+", m.name), m.name
        assert (m.kind == "counter") == m.name.endswith("_total"), m.name
        if m.kind == "histogram":
            assert m.name.endswith("_seconds"), m.name
            assert list(m.buckets) == sorted(m.buckets)
        assert m.help.endswith((".", ")")), m.name
        assert set(m.roles) <= set(catalog.ROLES)
        assert m.source is None or m.kind != "histogram"


def test_the_issues_metrics_are_declared() -> None:
    wanted = {
        "barrel_clients": ("transport",), "barrel_socketio_connects_total": (),
        "barrel_socketio_disconnects_total": (), "barrel_emits_total": (), "barrel_deliveries_total": (),
        "barrel_bus_frames_pushed_total": (), "barrel_bus_frames_delivered_total": (),
        "barrel_bus_frames_resent_total": (), "barrel_bus_frames_lost_total": (), "barrel_bus_gaps_total": (),
        "barrel_side_process_restarts_total": ("process",),
        "barrel_federation_link_up": ("peer", "direction"),
        "barrel_federation_link_queued_frames": ("peer", "direction"),
        "barrel_store_operations_total": ("op", "result"),
        "barrel_store_operation_duration_seconds": ("op",),
        "barrel_handoffs_total": ("result",), "barrel_handoff_latency_seconds": (),
        "barrel_slow_clients_cut_total": (), "barrel_slow_client_packets_dropped_total": (),
    }
    for name, labels in wanted.items():
        assert catalog.metric(name).labels == labels, name


def test_the_readme_lists_every_metric() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.rst").read_text()
    assert catalog.reference_table() in readme, (
        "README.rst's metrics list differs from `python -m gunicorn_barrel.metrics.catalog`")


# --------------------------------------------------------------------------- recorders


def test_a_recorder_reports_the_metrics_of_its_role_only() -> None:
    rec = recorder.Recorder()
    rec.series(catalog.metric("barrel_emits_total")).value += 3
    rec.series(catalog.metric("barrel_side_process_restarts_total"), "broadcaster").value = 2
    rec.copy_counters({"frames_pushed": 7, "clients_dropped_slow": 1, "unrelated": 9}, catalog.WORKER)
    worker = {(n, tuple(labels)): v for n, labels, v in rec.snapshot(catalog.WORKER)["series"]}
    assert worker[("barrel_emits_total", ())] == 3
    assert worker[("barrel_bus_frames_pushed_total", ())] == 7
    assert worker[("barrel_slow_clients_cut_total", ())] == 1
    assert worker[("barrel_bus_gaps_total", ())] == 0  # declared for workers: reported, at 0
    assert ("barrel_side_process_restarts_total", ("broadcaster",)) not in worker
    arbiter = rec.snapshot(catalog.ARBITER)["series"]
    assert arbiter == [["barrel_side_process_restarts_total", ["broadcaster"], 2]]


def test_histogram_buckets_are_upper_bounds_included() -> None:
    h = recorder.Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 3.0):
        h.observe(value)
    assert h.counts == [2, 2, 1]
    assert h.sum == pytest.approx(4.65)


def test_a_forked_child_starts_from_zero_with_the_same_objects() -> None:
    series = recorder.process().series(catalog.metric("barrel_emits_total"))
    series.value = 5
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the object its parent handed out, zeroed
        os.write(write, str(series.value).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 16) == b"0"
    os.close(read)
    assert series.value == 5


# --------------------------------------------------------------------------- snapshot files


def _recorder_with(values: dict[str, float]) -> recorder.Recorder:
    rec = recorder.Recorder()
    for name, value in values.items():
        rec.series(catalog.metric(name)).value = value
    return rec


def test_snapshots_of_dead_or_reused_pids_are_skipped_and_tidied(tmp_path: Path) -> None:
    rdir = str(tmp_path)
    snapshots.write(rdir, catalog.WORKER, _recorder_with({"barrel_emits_total": 4}))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = json.loads(Path(snapshots.path(rdir, catalog.WORKER, os.getpid())).read_text())
        # The file a dead process left, and one naming a live pid with another start time (reused).
        for pid, ticks in ((child.pid, procfs.stat(child.pid).start_ticks), (os.getppid(), 1)):
            Path(snapshots.path(rdir, catalog.WORKER, pid)).write_text(
                json.dumps({**mine, "pid": pid, "start_ticks": ticks}))
        assert {s["pid"] for s in snapshots.read_live(rdir)} == {os.getpid(), child.pid}
    finally:
        child.kill()
        child.wait()
    assert [s["pid"] for s in snapshots.read_live(rdir, tidy=True)] == [os.getpid()]
    assert sorted(os.listdir(snapshots.directory(rdir))) == [f"worker-{os.getpid()}.json"]


def test_a_snapshot_never_recreates_a_removed_runtime_dir(tmp_path: Path) -> None:
    gone = str(tmp_path / "gone")
    writer = snapshots.Writer(gone, catalog.WORKER, recorder.Recorder())
    writer.write(time.monotonic())  # logged once, never raised
    assert not os.path.exists(gone)


# --------------------------------------------------------------------------- the exposition


def _families(rdir: str) -> dict[str, Any]:
    text = exposition.render(rdir)[0].decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_the_exposition_labels_each_process_and_keeps_histograms_cumulative(tmp_path: Path) -> None:
    rdir = str(tmp_path)
    rec = _recorder_with({"barrel_emits_total": 4})
    rec.series(catalog.metric("barrel_clients"), "websocket").value = 3
    for value in (0.0002, 0.003, 0.003):
        rec.histogram(catalog.metric("barrel_store_operation_duration_seconds"), "get").observe(value)
    snapshots.write(rdir, catalog.WORKER, rec)
    found = _families(rdir)
    pid = str(os.getpid())
    (emits,) = found["barrel_emits"].samples  # the parser strips _total from the family's name
    assert (emits.name, emits.labels, emits.value) == ("barrel_emits_total",
                                                       {"role": "worker", "pid": pid}, 4)
    (clients,) = found["barrel_clients"].samples
    assert clients.labels == {"role": "worker", "pid": pid, "transport": "websocket"} and clients.value == 3
    buckets = {s.labels["le"]: s.value for s in found["barrel_store_operation_duration_seconds"].samples
               if s.name.endswith("_bucket")}
    assert (buckets["0.00025"], buckets["0.0025"], buckets["0.005"], buckets["+Inf"]) == (1, 1, 3, 3)
    memory = found["barrel_process_resident_memory_bytes"].samples
    assert memory[0].labels["pid"] == pid and memory[0].value > 0


def test_the_exposition_of_a_missing_directory_is_empty_not_an_error(tmp_path: Path) -> None:
    found = _families(str(tmp_path / "gone"))
    assert all(not f.samples for f in found.values())


# --------------------------------------------------------------------------- statsd


def _snapshot(pid: int, started: float, series: list[list[Any]], histograms: list[list[Any]] = ()
              ) -> dict[str, Any]:
    return {"pid": pid, "start_ticks": pid, "started": started, "series": series,
            "histograms": list(histograms)}


def test_statsd_lines_are_increases_sums_and_interval_means() -> None:
    deltas = statsd.Deltas()
    op = catalog.metric("barrel_store_operation_duration_seconds")
    counts = [0] * (len(op.buckets) + 1)
    first = [_snapshot(1, 0.0, [["barrel_emits_total", [], 10], ["barrel_clients", ["websocket"], 2]],
                       [[op.name, ["get"], counts, 0.0]])]
    assert deltas.lines(first, now=100.0) == []  # the first pass only takes note
    second = [
        _snapshot(1, 0.0, [["barrel_emits_total", [], 13], ["barrel_clients", ["websocket"], 2]],
                  [[op.name, ["get"], [4, *counts[1:]], 0.002]]),
        # A worker that started after the last pass: counted from 0.
        _snapshot(2, 100.5, [["barrel_emits_total", [], 5], ["barrel_clients", ["websocket"], 3],
                             ["barrel_client_queue_peak_packets", [], 7]]),
        _snapshot(3, 50.0, [["barrel_side_process_start_time_seconds", ["store"], 50.0]]),
    ]
    assert deltas.lines(second, now=101.0) == [
        "barrel.emits:8|c",
        "barrel.client_queue_peak_packets:7|g",
        "barrel.clients.websocket:5|g",
        "barrel.store_operation_duration.get:0.5|ms|@0.25",
    ]
    assert deltas.lines(second, now=102.0) == ["barrel.client_queue_peak_packets:7|g",
                                               "barrel.clients.websocket:5|g"]


def test_statsd_prefix_tags_and_datagram_size() -> None:
    assert statsd.prefix_of("") == "" and statsd.prefix_of("app") == "app."
    assert statsd.prefix_of("app...") == "app."
    lines = [f"barrel.x{i}:1|c" for i in range(200)]
    grams = statsd.datagrams(lines, "app.", "env:prod")
    assert all(len(g) <= statsd.MAX_DATAGRAM for g in grams) and len(grams) > 1
    sent = b"\n".join(grams).split(b"\n")
    assert sent == [f"app.{line}|#env:prod".encode() for line in lines]


def test_statsd_sender_reaches_a_udp_listener() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        sender = statsd.Sender(f"127.0.0.1:{listener.getsockname()[1]}", "gunicorn")
        sender.send(["barrel.emits:3|c"])
        sender.close()
        assert listener.recv(2048) == b"gunicorn.barrel.emits:3|c"


# --------------------------------------------------------------------------- finding an instance


@contextmanager
def _stand_in_arbiter(base: Path) -> Iterator[tuple[int, str, int]]:
    """A process that holds a runtime directory under ``base`` and a listening socket, and
    forks a "worker" that inherits both, as gunicorn's arbiter does: (pid, directory, port).

    Not this test process: it may hold the locks of directories that other tests made.
    """
    code = (
        "import os, socket, sys, time\n"
        "from gunicorn_barrel.runtime import endpoints\n"
        f"rdir = endpoints.create_runtime_dir({str(base)!r})\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "if os.fork() == 0:\n    time.sleep(60); os._exit(0)\n"
        "print(os.getpid(), rdir, s.getsockname()[1], flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        pid, rdir, port = proc.stdout.readline().split()
        yield int(pid), rdir, int(port)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Its forked "worker" holds the lock too, and may die a moment after it.
    wait_for(lambda: not endpoints.is_live(rdir), 10, "the stand-in's lock released")


def test_an_instance_is_found_by_its_directory_its_base_or_its_pid(tmp_path: Path) -> None:
    with _stand_in_arbiter(tmp_path) as (pid, rdir, _port):
        assert locate.from_runtime_dir(rdir) == rdir
        assert locate.from_runtime_dir(str(tmp_path)) == rdir
        assert locate.from_pid(pid) == rdir
        pid_file = tmp_path / "gunicorn.pid"
        pid_file.write_text(f"{pid}\n")
        assert locate.from_pid_file(str(pid_file)) == rdir
        second = endpoints.create_runtime_dir(str(tmp_path))  # held by this process: live
        try:
            with pytest.raises(locate.NotFound, match="several instances run under"):
                locate.from_runtime_dir(str(tmp_path))
        finally:
            endpoints.remove_runtime_dir(second)
    with pytest.raises(locate.NotFound, match="no running gunicorn_barrel instance under"):
        locate.from_runtime_dir(str(tmp_path))


def test_not_found_says_why(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(locate.NotFound, match=f"no process {child.pid} is running"):
        locate.from_pid(child.pid)
    plain = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(locate.NotFound, match="is not a gunicorn_barrel instance"):
            locate.from_pid(plain.pid)
    finally:
        plain.kill()
        plain.wait()
    with pytest.raises(locate.NotFound, match="no pid file"):
        locate.from_pid_file(str(tmp_path / "missing.pid"))
    with pytest.raises(locate.NotFound, match="nothing listens on"):
        locate.from_bind(f"127.0.0.1:{_closed_port()}")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_an_instance_is_found_by_the_address_its_arbiter_listens_on(tmp_path: Path) -> None:
    with _stand_in_arbiter(tmp_path) as (_pid, rdir, port):
        assert locate.from_bind(f"127.0.0.1:{port}") == rdir
        assert locate.from_bind(f"localhost:{port}") == rdir


# --------------------------------------------------------------------------- the status report


def test_the_status_report_of_an_instance(tmp_path: Path) -> None:
    rdir = str(tmp_path)
    started = procfs.stat(os.getpid()).start_time
    arbiter = recorder.Recorder()
    arbiter.series(catalog.metric("barrel_side_process_restarts_total"), "broadcaster").value = 1
    snapshots.write(rdir, catalog.ARBITER, arbiter, {"side_processes": [
        {"name": "broadcaster", "pid": 4242, "started": started + 5, "restarts": 1}]})
    worker = json.loads(Path(snapshots.path(rdir, catalog.ARBITER, os.getpid())).read_text())
    worker.update(role="worker", series=[
        ["barrel_clients", ["websocket"], 3], ["barrel_clients", ["polling"], 1],
        ["barrel_emits_total", [], 12], ["barrel_handoffs_total", ["sent"], 2],
        ["barrel_store_operations_total", ["get", "ok"], 5],
        ["barrel_store_operations_total", ["set", "timeout"], 1]])
    Path(snapshots.path(rdir, catalog.WORKER, os.getpid())).write_text(json.dumps(worker))
    endpoints.write_status(rdir, {"links": [{"name": "b", "dialed": True, "up": True, "queued": 3}]})
    report = status.gather(rdir, now=started + 65)
    assert report["arbiter"]["pid"] == os.getpid() and report["arbiter"]["uptime"] == pytest.approx(65)
    (w,) = report["workers"]
    assert (w["clients"], w["emits"], w["store_operations"]) == ({"websocket": 3, "polling": 1}, 12, 6)
    assert report["side_processes"] == [{"name": "broadcaster", "pid": 4242, "started": started + 5,
                                         "uptime": pytest.approx(60), "restarts": 1, "reporting": False}]
    assert report["federation_links"] == [{"peer": "b", "direction": "dial", "up": True, "queued": 3}]
    assert report["counters"]['barrel_store_operations_total{op="set",result="timeout"}'] == 1
    text = status.render(report)
    assert "workers: 1, clients: 4 (websocket 3, polling 1)" in text
    assert re.search(r"broadcaster\s+4242\s+1m\s+1", text)
    assert re.search(r"b\s+dial\s+up\s+3", text)
    assert re.search(r"store operations / errors / timeouts\s+6 / 0 / 1", text)
    assert re.search(r"handoffs sent / failed / received\s+2 / 0 / 0", text)
    json.dumps(report)  # --json prints it as it is


def test_the_broadcaster_reports_each_federation_link(tmp_path: Path) -> None:
    from gunicorn_barrel.bus.zeromq.broadcaster import Broadcaster

    broadcaster = Broadcaster(str(tmp_path), 1024 * 1024, None)
    broadcaster.counters["federation_frames_out"] = 12
    broadcaster._record([{"name": "b", "dialed": True, "up": True, "queued": 3},
                         {"name": "c", "dialed": False, "up": False, "queued": 40}])
    broadcaster._metrics.write(time.monotonic())
    found = _families(str(tmp_path))
    up = {(s.labels["peer"], s.labels["direction"]): s.value
          for s in found["barrel_federation_link_up"].samples}
    queued = {s.labels["peer"]: s.value for s in found["barrel_federation_link_queued_frames"].samples}
    assert (up, queued) == ({("b", "dial"): 1, ("c", "listen"): 0}, {"b": 3, "c": 40})
    assert [s.value for s in found["barrel_federation_frames_out"].samples] == [12]
    assert all(s.labels["role"] == "broadcaster" for s in found["barrel_federation_link_up"].samples)
