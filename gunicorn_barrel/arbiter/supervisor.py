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
when the arbiter dies, so it never outlives it. Its stdout and stderr are a
pipe that a thread here reads: what it logs goes to gunicorn's error log, in
gunicorn's format with its own pid (``runtime.logs``).

Side processes of the user's own (``arbiter.user_processes``) are this class
with another command line, environment and output handling (the attributes
and methods below marked as such).
"""
from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Protocol

from gunicorn_barrel.config import arguments
from gunicorn_barrel.config.settings import BarrelSettings
from gunicorn_barrel.runtime import endpoints, logs

_READY_TIMEOUT = 10.0
_MAX_RESTART_DELAY = 2.0
_STABLE_AFTER = 2.0
_RELAY_DRAIN = 2.0  # seconds stop() waits for a stopped process's last log lines
_STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# The read ends of the side processes' output pipes, which the relay threads
# read. A worker forked from the arbiter would hold copies of them: once the
# arbiter is SIGKILLed, a side process writing its last lines would block on
# a full pipe while any worker lives, instead of getting EPIPE. A forked child
# lets go of them at once (the relay removes an fd here before closing it, so
# a child never touches an fd number that was reused).
_relayed_fds: set[int] = set()


def _release_relayed_fds() -> None:
    if not _relayed_fds:
        return
    null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    for fd in list(_relayed_fds):
        try:
            os.dup2(null, fd, inheritable=False)
        except OSError:
            pass
    os.close(null)
    _relayed_fds.clear()


os.register_at_fork(after_in_child=_release_relayed_fds)


def _relay(stream: IO[bytes], pid: int, log: Logger, level: int, prefix: str) -> None:
    fd = stream.fileno()
    try:
        logs.relay(stream, pid, log, level, prefix)
    finally:
        _relayed_fds.discard(fd)
        stream.close()


class Logger(Protocol):
    def info(self, msg: str, *args: object) -> None: ...
    def warning(self, msg: str, *args: object) -> None: ...
    def error(self, msg: str, *args: object) -> None: ...


class SideProcessSupervisor:
    """Owns one side process: starts it, restarts it when it dies, stops it."""

    # What a subclass may change:
    # seconds start() waits for the process's ready mark (None: started means spawned);
    ready_timeout: float | None = _READY_TIMEOUT
    # stdout and stderr on two pipes (plain lines INFO and ERROR), or stderr into stdout (ERROR);
    split_output = False
    # stops and restarts signal the process's whole group, and what it leaves there is killed.
    whole_group = False

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
        self.label = f"barrel {name}"  # in log lines
        self.log_prefix = ""  # before each line it writes, in gunicorn's log
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
        self.started_at = 0.0  # time.time() of the last (re)start
        # Called after each restart, from the supervising thread (the arbiter's metrics).
        self.on_change: Callable[[SideProcessSupervisor], None] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pidfd: int | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._relays: list[threading.Thread] = []
        self._restart_for: str | None = None  # why restart() ended the running process

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Launch the process, wait until it is ready, then supervise it."""
        self._spawn()
        if self.ready_timeout is not None:
            self.wait_ready(self.ready_timeout)
        self._thread = threading.Thread(target=self._watch, name=f"barrel-{self.name}", daemon=True)
        self._thread.start()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while endpoints.ready_pid(self.runtime_dir, self.name) != self.pid:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the {self.label} did not start within {timeout:g} s; "
                    "see its messages above"
                )
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"the {self.label} exited at start; see its messages above")
            time.sleep(0.01)

    def command(self) -> list[str]:
        """The command line (a subclass's may differ)."""
        return [
            sys.executable, "-m", self.module,
            *arguments.instance_args(self.runtime_dir, self.arbiter_pid),
            *self.args,
        ]

    def environment(self) -> dict[str, str]:
        """gunicorn's environment, with this package importable and the log level set."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, env.get("PYTHONPATH")]))
        env.update(logs.side_process_env(self.log))
        return env

    def _spawn(self) -> None:
        with self._lock:
            self._proc = proc = subprocess.Popen(
                self.command(), env=self.environment(), process_group=0, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE if self.split_output else subprocess.STDOUT,
                user=self._user, group=self._group, extra_groups=[] if self._user else None,
            )
            assert proc.stdout is not None
            outputs = [(proc.stdout, logging.INFO if self.split_output else logging.ERROR)]
            if proc.stderr is not None:
                outputs.append((proc.stderr, logging.ERROR))
            _relayed_fds.update(stream.fileno() for stream, _ in outputs)
            self._relays = [threading.Thread(
                target=_relay, args=(stream, proc.pid, self.log, level, self.log_prefix),
                name=f"barrel-{self.name}-log", daemon=True,
            ) for stream, level in outputs]
            for relay in self._relays:
                relay.start()
            try:
                self._pidfd = os.pidfd_open(proc.pid)
            except ProcessLookupError:  # died and reaped already: _watch restarts it
                self._pidfd = None
        self.started_at = time.time()
        self.log.info("%s started (pid: %s)", self.label, proc.pid)

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
            watched = self._pidfd is not None
            if not self._wait_exit():
                return
            self._close_pidfd()
            if self.whole_group and watched and self.pid is not None:
                _kill_group(self.pid)  # a new process starts alone
            with self._lock:
                asked, self._restart_for = self._restart_for, None
            if asked is not None:
                self.log.info("%s (pid: %s) stopped for %s; starting it again", self.label, self.pid, asked)
                wait = 0.0
            else:
                self.log.error("%s (pid: %s) died; restarting", self.label, self.pid)
                if time.monotonic() - started > _STABLE_AFTER:
                    delay = self.settings.restart_delay
                wait, delay = delay, min(max(delay * 2, 0.05), _MAX_RESTART_DELAY)
            if self._stop.wait(wait):
                return
            try:
                self._spawn()
                if asked is None:
                    self.restarts += 1
            except OSError as exc:
                self.log.error("cannot restart the %s: %s", self.label, exc)
            self._changed()

    def restart(self, why: str) -> None:
        """End the running process (SIGTERM, SIGKILL after 5 s) and start it again at once.

        Not counted in ``restarts`` (which counts deaths). A process that is
        already dead is being restarted anyway, with what ``command()`` says then.
        """
        with self._lock:
            proc, pidfd = self._proc, self._pidfd
            if proc is None or pidfd is None or self._stop.is_set():
                return
            self._restart_for = why
            # Our own copy: the watcher closes its pidfd when the process ends.
            mine = os.dup(pidfd)
        threading.Thread(target=self._end, args=(proc, mine), name=f"barrel-{self.name}-restart",
                         daemon=True).start()

    def _end(self, proc: subprocess.Popen[bytes], pidfd: int) -> None:
        try:
            _terminate(proc, pidfd, _STOP_TIMEOUT, self.whole_group)
        finally:
            os.close(pidfd)

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(self)
            except Exception as exc:  # an observer never stops the supervision
                self.log.warning("barrel %s: status update failed: %s", self.name, exc)

    def _close_pidfd(self) -> None:
        with self._lock:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """Stop supervising and end the process."""
        self._stop.set()
        os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout)
        proc = self._proc
        if proc is not None:
            _terminate(proc, self._pidfd, timeout, self.whole_group)
        for relay in self._relays:
            relay.join(_RELAY_DRAIN)  # its last lines (counters) before ours
        self._close_pidfd()
        self.log.info("%s stopped, %s restart(s)", self.label, self.restarts)


def _terminate(proc: subprocess.Popen[bytes], pidfd: int | None, timeout: float, group: bool) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 1.0)):
        try:
            if pidfd is not None and group and not select.select([pidfd], [], [], 0)[0]:
                os.killpg(proc.pid, sig)  # the leader lives: the group is still its own
            elif pidfd is not None:
                signal.pidfd_send_signal(pidfd, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            break
        if pidfd is None or select.select([pidfd], [], [], wait)[0]:
            break
    if group and pidfd is not None:
        _kill_group(proc.pid)
    try:
        proc.wait(0.5)  # reap it if the arbiter has not already
    except (subprocess.TimeoutExpired, ChildProcessError):
        pass


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left in the process group of a leader that just ended.

    The number is still that group's: a pid is not reused while a group of
    that number has members, and reusing it otherwise takes a whole cycle of
    pids between the leader's end and this call.
    """
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
