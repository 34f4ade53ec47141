"""Starting, supervising and stopping barrel's side processes from the gunicorn arbiter.

The side processes are the broadcaster and, with the embedded store, the
store server. Each is exec'd as ``python -m <module>`` (so ``ps`` shows what
it is) with the runtime directory and the arbiter pid on its command line.

Why not multiprocessing or a plain Popen.wait():
- the arbiter reaps every child with ``waitpid(-1)``, so Popen loses the exit
  status and ``wait()`` would race it; we watch a pidfd instead, which turns
  readable when the process ends whoever reaps it;
- a ``multiprocessing`` daemon is SIGTERMed by the first worker that exits
  (its atexit handler runs in forked workers); an exec'd process is not.

A side process runs in its own process group (terminal Ctrl-C reaches the
arbiter only, which then stops us in order) and asks the kernel for SIGTERM
when the arbiter dies, so it never outlives it.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from typing import Protocol

from gunicorn_barrel.bus import endpoints
from gunicorn_barrel.settings import BarrelSettings

_READY_TIMEOUT = 10.0
_MAX_RESTART_DELAY = 2.0
_STABLE_AFTER = 2.0


class Logger(Protocol):
    def info(self, msg: str, *args: object) -> None: ...
    def warning(self, msg: str, *args: object) -> None: ...
    def error(self, msg: str, *args: object) -> None: ...


class SideProcessSupervisor:
    """Owns one side process: starts it, restarts it when it dies, stops it."""

    def __init__(
        self,
        name: str,
        module: str,
        args: list[str],
        runtime_dir: str,
        settings: BarrelSettings,
        log: Logger,
        uid: int | None = None,
        gid: int | None = None,
    ) -> None:
        self.name = name
        self.module = module
        self.args = args
        self.settings = settings
        self.log = log
        self.arbiter_pid = os.getpid()
        self.runtime_dir = runtime_dir
        # Run it as the workers' user (gunicorn's user/group), so that the ipc
        # sockets it creates are theirs to connect to.
        drop = os.geteuid() == 0 and uid is not None and uid != 0
        self._user = uid if drop else None
        self._group = gid if drop else None
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Launch the process, wait until it is ready, then supervise it."""
        self._spawn()
        self.wait_ready(_READY_TIMEOUT)
        self._thread = threading.Thread(target=self._watch, name=f"barrel-{self.name}", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while endpoints.ready_pid(self.runtime_dir, self.name) != self.pid:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the barrel {self.name} did not start within {timeout:.0f} s; "
                    "see its messages above"
                )
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"the barrel {self.name} exited at start; see its messages above")
            time.sleep(0.01)

    def _spawn(self) -> None:
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
        cmd = [
            sys.executable, "-m", self.module,
            "--runtime-dir", self.runtime_dir,
            "--parent-pid", str(self.arbiter_pid),
            *self.args,
        ]
        with self._lock:
            self._proc = subprocess.Popen(
                cmd, env=env, process_group=0, stdin=subprocess.DEVNULL,
                user=self._user, group=self._group, extra_groups=[] if self._user else None,
            )
            try:
                self._pidfd = os.pidfd_open(self._proc.pid)
            except ProcessLookupError:  # died and reaped already: _watch restarts it
                self._pidfd = None
        self.log.info("barrel %s started (pid: %s)", self.name, self._proc.pid)

    def _wait_exit(self) -> bool:
        """Block until the broadcaster ends (True) or stop() is called (False)."""
        if self._pidfd is None:
            return not self._stop.is_set()
        readable, _, _ = select.select([self._pidfd, self._wake_r], [], [])
        return self._pidfd in readable and not self._stop.is_set()

    def _watch(self) -> None:
        delay = self.settings.restart_delay
        while not self._stop.is_set():
            started = time.monotonic()
            if not self._wait_exit():
                return
            self._close_pidfd()
            self.log.error("barrel %s (pid: %s) died; restarting", self.name, self.pid)
            if time.monotonic() - started > _STABLE_AFTER:
                delay = self.settings.restart_delay
            if self._stop.wait(delay):
                return
            delay = min(max(delay * 2, 0.05), _MAX_RESTART_DELAY)
            try:
                self._spawn()
                self.restarts += 1
            except OSError as exc:
                self.log.error("cannot restart the barrel %s: %s", self.name, exc)

    def _close_pidfd(self) -> None:
        with self._lock:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop supervising and end the process."""
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout)
        proc = self._proc
        if proc is not None:
            _terminate(proc, self._pidfd, timeout)
        self._close_pidfd()
        self.log.info("barrel %s stopped, %s restart(s)", self.name, self.restarts)


def _terminate(proc: subprocess.Popen[bytes], pidfd: int | None, timeout: float) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 1.0)):
        try:
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            return
        if pidfd is None or select.select([pidfd], [], [], wait)[0]:
            break
    try:
        proc.wait(0.5)  # reap it if the arbiter has not already
    except (subprocess.TimeoutExpired, ChildProcessError):
        pass
