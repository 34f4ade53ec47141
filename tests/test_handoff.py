"""Handing a connection to its owner (gunicorn_barrel.worker.handoff), with real processes.

A SIGKILLed worker is a zombie for /proc while its other threads (zeromq's)
are still torn down, and its handoff socket still takes a connection, which
is reset when the socket finally goes: a handoff must not be tried then. The
owner here is a process whose main thread exited while another thread
lives, as a killed worker looks in that moment.
"""
from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gunicorn_barrel.worker.handoff import HandoffSender
from gunicorn_barrel.worker.serve import Connection
from tests.harness import wait_for

OWNER = """
import ctypes, os, socket, sys, threading, time
sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
sock.bind(os.path.join(sys.argv[1], f"w-{os.getpid()}.sock"))
sock.listen(8)
threading.Thread(target=time.sleep, args=(30,)).start()  # keeps the process and its socket
print("ready", flush=True)
if sys.argv[2] == "dying":
    ctypes.CDLL(None).pthread_exit(None)  # the main thread goes: a zombie leader
time.sleep(30)
"""


@contextmanager
def _owner(runtime_dir: Path, state: str) -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-c", OWNER, str(runtime_dir), state],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize(("state", "handed"), [("alive", True), ("dying", False)])
def test_no_handoff_to_a_worker_that_is_exiting(tmp_path: Path, state: str, handed: bool) -> None:
    sender = HandoffSender(str(tmp_path))
    client, other_end = socket.socketpair()
    try:
        with _owner(tmp_path, state) as pid:
            if handed:
                assert _state(pid) != "Z"
            else:  # it printed "ready" just before its main thread exits: wait for that
                wait_for(lambda: _state(pid) == "Z", 10, "the owner's main thread gone")
            assert sender.send(pid, client, ["127.0.0.1", 5], 0, Connection()) is handed
            assert sender.failed == (0 if handed else 1)
    finally:
        sender.close()
        client.close()
        other_end.close()
