"""runtime.stop_signals (side.stop_signals()): SIGTERM ends the wait, whenever it comes.

Each case is a real child process: the signal is sent to it while it waits in
a tight loop (where a handler setting a threading.Event can deadlock), with a
thread started after the mask, which must not take the signal's default action.
"""
from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time

from tests.harness import REPO

CHILD = textwrap.dedent("""
    import os, signal, sys, threading, time
    from gunicorn_barrel import side
    stop = side.stop_signals()
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    if sys.argv[1] == "self":
        os.kill(os.getpid(), signal.SIGTERM)  # before any wait: the next one returns at once
        print("waited", stop.wait(60), flush=True)
    else:
        print("ready", flush=True)
        rounds = 0
        while not stop.wait(0.0001):
            rounds += 1
    print("stopped by", signal.Signals(stop.received).name, "still", bool(stop), flush=True)
""")


def _child(mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", CHILD, mode], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_signal_sent_before_the_wait_ends_it_at_once() -> None:
    child = _child("self")
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert out.splitlines() == ["waited True", "stopped by SIGTERM still True"]


def test_sigterm_at_any_moment_of_a_busy_wait_loop_stops_it() -> None:
    rng = random.Random(7)
    for _ in range(20):
        child = _child("loop")
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "ready\n"
            time.sleep(rng.random() * 0.02)  # jitter, not synchronisation: any moment of the loop
            child.send_signal(signal.SIGTERM)
            out, err = child.communicate(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == 0, err
        assert out == "stopped by SIGTERM still True\n"
