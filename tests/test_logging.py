"""Barrel logs through gunicorn's error log, in every barrel process: its format, level and pids.

The integration test runs gunicorn -w 2 with --error-logfile: the workers'
exit counters (README: "Workers log them when they exit"), a worker's bus
warning and the side processes' lines must all be in that file, each with
gunicorn's time stamp and the pid of the process that logged it.
"""
from __future__ import annotations

import ast
import logging
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import zmq
from gunicorn.config import Config
from gunicorn.glogging import Logger as GunicornLogger

from gunicorn_barrel.bus import wire
from gunicorn_barrel.bus.channels import STORE_CHANGES
from gunicorn_barrel.runtime import logs
from tests.harness import Gunicorn, spread_clients, wait_for

# gunicorn's error-log line: "[2026-11-02 10:00:00 +0000] [pid] [LEVEL] message"
LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[(\d+)\] \[([A-Z]+)\] (.*)$")


def _lines(path: Path) -> list[tuple[int, str, str]]:
    """(pid, level, message) of every line in gunicorn's error-log format."""
    return [(int(m[1]), m[2], m[3]) for m in map(LINE.match, path.read_text(errors="replace").splitlines())
            if m]


def _gunicorn_logger(path: Path, level: str) -> GunicornLogger:
    cfg = Config()
    cfg.set("errorlog", str(path))
    cfg.set("loglevel", level)
    return GunicornLogger(cfg)


@pytest.fixture
def barrel_logger_reset():
    barrel = logging.getLogger(logs.ROOT)
    saved = barrel.handlers[:], barrel.level, barrel.propagate
    yield barrel
    barrel.handlers[:], barrel.level, barrel.propagate = saved[0], saved[1], saved[2]


def test_barrel_records_follow_gunicorns_error_log_and_level(tmp_path: Path, barrel_logger_reset) -> None:
    path = tmp_path / "errors.log"
    glog = _gunicorn_logger(path, "warning")
    logs.follow_gunicorn(glog)
    logs.follow_gunicorn(glog)  # again (HUP, each worker): still one handler
    logging.getLogger("gunicorn_barrel.bus").info("dropped at level warning")
    logging.getLogger("gunicorn_barrel.bus").warning("bus gap: %s", "kept")
    for handler in glog.error_log.handlers:
        handler.flush()
    assert _lines(path) == [(os.getpid(), "WARNING", "bus gap: kept")]
    assert len(barrel_logger_reset.handlers) == 1


def test_a_barrel_logger_the_user_configured_is_left_alone(tmp_path: Path, barrel_logger_reset) -> None:
    mine = logging.StreamHandler()
    barrel_logger_reset.handlers[:] = [mine]
    logs.follow_gunicorn(_gunicorn_logger(tmp_path / "errors.log", "info"))
    assert barrel_logger_reset.handlers == [mine]


def test_side_process_lines_become_records_with_its_pid_and_time() -> None:
    line = b'{"barrel_log": 1, "level": 30, "time": 1700000000.25, "name": "gunicorn_barrel.store", ' \
           b'"message": "store: malformed request refused\\nsecond line"}\n'
    record = logs.side_record(line, 4242)
    assert record is not None
    assert (record.levelno, record.levelname, record.process, record.created, record.name) == (
        logging.WARNING, "WARNING", 4242, 1700000000.25, "gunicorn_barrel.store")
    assert record.getMessage() == "store: malformed request refused\nsecond line"
    raw = logs.side_record(b"Traceback (most recent call last): 100% %s\n", 4242)
    assert raw is not None and raw.levelno == logging.ERROR and raw.process == 4242
    assert raw.getMessage() == "Traceback (most recent call last): 100% %s"
    for bad in (b'{"barrel_log": 1, "level": "x"}\n', b"{not json\n"):
        other = logs.side_record(bad, 1)
        assert other is not None and other.levelno == logging.ERROR
    assert logs.side_record(b"\n", 1) is None


def test_a_side_process_logs_at_gunicorns_level_into_its_error_log(tmp_path: Path) -> None:
    path = tmp_path / "errors.log"
    glog = _gunicorn_logger(path, "warning")
    env = {**os.environ, **logs.side_process_env(glog)}
    script = ("import logging, warnings; from gunicorn_barrel.runtime import logs; "
              "logs.side_process_logging(); log = logging.getLogger('gunicorn_barrel.store'); "
              "log.info('below the level'); log.warning('store: %s', 'kept'); "
              "warnings.warn('a python warning'); print('printed', flush=True)")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=Path(__file__).parent.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    logs.relay(proc.stdout, proc.pid, glog)  # type: ignore[arg-type]  # until the pipe closes
    assert proc.wait(10) == 0
    for handler in glog.error_log.handlers:
        handler.flush()
    lines = _lines(path)
    assert [(pid, level) for pid, level, _msg in lines] == [(proc.pid, "WARNING")] * 2 + [(proc.pid, "ERROR")]
    assert lines[0][2] == "store: kept"
    assert "a python warning" in lines[1][2]
    assert lines[2][2] == "printed"  # not a record: relayed as an error


def _push_frames_with_a_hole(runtime_dir: str) -> None:
    """Frames 1 and 3 of a made-up sender: every worker holds 3 back, then counts and logs the gap."""
    ctx = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect("ipc://" + str(Path(runtime_dir) / "pull.sock"))
        origin = uuid.uuid4().bytes
        for seq in (1, 3):
            push.send_multipart(wire.encode(wire.Frame(STORE_CHANGES, origin, seq, {}, base=1), 4096))
        push.send_multipart([b"garbage"])  # refused by the broadcaster, which logs it
        push.close()
    finally:
        ctx.term()


@pytest.mark.integration
def test_every_barrel_process_logs_into_gunicorns_error_log(tmp_path: Path) -> None:
    errors = tmp_path / "errors.log"
    sender = 0
    srv = Gunicorn(workers=2, extra_args=("--log-level", "info", "--error-logfile", str(errors)),
                   env={"BARREL_GAP_TIMEOUT": "0.3"})
    try:
        srv.start()
        workers = sorted(srv.worker_pids())
        broadcaster, store = srv.broadcaster_pid(), srv.store_pids()[0]
        clients = spread_clients(srv.url, 2, per_worker=1)
        clients[0].call("broadcast", {"n": 1})  # some traffic for the counters
        sender = clients[0].pid
        _push_frames_with_a_hole(srv.runtime_dir())

        def gap_warnings() -> set[int]:
            return {pid for pid, level, msg in _lines(errors)
                    if level == "WARNING" and msg.startswith("bus gap: frames 2..2 of ")}

        wait_for(lambda: gap_warnings() == set(workers), 15, "each worker's bus gap warning")
        for c in clients:
            c.close()
    finally:
        srv.stop()  # SIGTERM: a graceful stop
    lines = _lines(errors)

    exits = {pid: msg for pid, level, msg in lines if level == "INFO" and "exiting; counters" in msg}
    assert sorted(exits) == workers, lines
    counters = {}
    for pid, msg in exits.items():
        head, _, text = msg.partition(" counters ")
        assert head == f"barrel worker {pid} exiting;"
        counters[pid] = ast.literal_eval(text)
        assert counters[pid]["gaps"] == 1 and counters[pid]["frames_lost"] == 1
        assert counters[pid]["frames_delivered"] >= 1
    # The broadcast, beside the cluster API's presence frames (gunicorn_barrel.sio.peers).
    assert counters[sender]["frames_pushed"] - counters[sender]["cluster_frames_sent"] == 1

    def by(pid: int, level: str, text: str) -> bool:
        return any(p == pid and lvl == level and text in msg for p, lvl, msg in lines)

    assert by(broadcaster, "INFO", f"broadcaster {broadcaster} ready")
    assert by(broadcaster, "WARNING", "refused a frame")
    assert by(broadcaster, "INFO", f"broadcaster {broadcaster} stopped; counters")
    assert by(store, "INFO", f"store {store} ready")
    assert by(store, "INFO", f"store {store} stopped")
