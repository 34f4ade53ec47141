"""Real processes for integration tests: gunicorn on a free loopback port, clients.

Everything started here is stopped by pid; waits poll with a deadline.
"""
from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import requests
import socketio

from gunicorn_barrel.runtime import endpoints

REPO = Path(__file__).resolve().parent.parent
# Where instances write their logs and store files. Under pytest, tests/conftest.py
# points it at the session's temporary directory (pytest keeps the last three
# runs' and removes older ones), so a run leaves nothing of its own in /tmp.
FILES_DIR = Path(tempfile.gettempdir())
EXAMPLE_CONF = REPO / "example_confs" / "barrel_conf.py"
BROADCASTER_MODULE = "gunicorn_barrel.bus.zeromq.broadcaster"
STORE_MODULE = "gunicorn_barrel.store.embedded.server"
SIDE_PROCESS_MARK = "-m gunicorn_barrel."
GUNICORN_SCRIPT = str(Path(sys.executable).parent / "gunicorn")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def read_response_head(sock: socket.socket) -> bytes:
    """What ``sock`` receives until the end of an HTTP response head (or until it closes)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return head


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stat_field(pid: int, index: int) -> int | None:
    """A numeric field of /proc/<pid>/stat, counted from the one after the command name."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[index])
    except (OSError, ValueError, IndexError):
        return None


def _ppid(pid: int) -> int | None:
    return _stat_field(pid, 1)


def process_group(pid: int) -> int | None:
    return _stat_field(pid, 2)


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _ppid(int(entry)) == pid and pid_alive(int(entry)):
            kids.append(int(entry))
    return kids


def processes_matching(text: str) -> list[int]:
    """Live pids whose command line contains ``text`` (used to look, never to kill)."""
    return [
        int(e) for e in os.listdir("/proc")
        if e.isdigit() and text in _cmdline(int(e)) and pid_alive(int(e))
    ]


class Gunicorn:
    """One gunicorn instance running an app with the barrel example config."""

    def __init__(
        self,
        app: str = "tests.apps.sio_app:wsgi",
        workers: int = 4,
        extra_args: tuple[str, ...] = (),
        conf: Path = EXAMPLE_CONF,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        # A barrel instance unless the command line picks another worker class.
        self.barrel = "-k" not in extra_args and "--worker-class" not in extra_args
        self.log_path = log_path or FILES_DIR / f"barrel-test-gunicorn-{self.port}.log"
        # The console script, not `python -m gunicorn`: on USR2 gunicorn
        # re-execs sys.argv, and `python .../gunicorn/__main__.py` would put
        # gunicorn's package dir first on sys.path (its `http` shadows the stdlib's).
        self.cmd = [
            GUNICORN_SCRIPT, "-c", str(conf), "-w", str(workers),
            "-b", f"127.0.0.1:{self.port}", "--chdir", str(REPO), "--no-control-socket",
            "--graceful-timeout", "5", *extra_args, app,
        ]
        # Each instance keeps its embedded store in a file of its own.
        self.store_path = FILES_DIR / f"barrel-test-store-{self.port}.sqlite3"
        self.env = {**os.environ, "BARREL_STORE_PATH": str(self.store_path), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_pids: set[int] = set()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0, wait_ready: bool = True) -> Gunicorn:
        """Start; wait until it serves and (``wait_ready``, barrel) every worker runs with a live bus."""
        # O_APPEND: gunicorn's processes share this file; without it their
        # writes land at stale offsets and overwrite each other.
        self.log_path.write_bytes(b"")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        wait_for(self._serving, timeout, f"gunicorn on {self.url} (log: {self.log_path})")
        if self.barrel and wait_ready:
            self.wait_workers_ready(timeout)
        else:  # plain gunicorn (a reference run): no barrel readiness marks
            wait_for(lambda: len(self.worker_pids()) == self.workers, timeout, "all workers booted")
        self.remember_pids()
        return self

    def ready_worker_pids(self) -> set[int]:
        """Workers that marked themselves ready in the runtime dir: serving, bus live."""
        base = self.env.get("BARREL_RUNTIME_DIR") or tempfile.gettempdir()
        marked: set[int] = set()
        for rdir in glob.glob(os.path.join(base, f"barrel-{self.pid}-*")):
            marked |= endpoints.ready_workers(rdir)
        return marked & set(self.worker_pids())

    def wait_workers_ready(self, timeout: float = 30.0, count: int | None = None) -> list[int]:
        """Wait until ``count`` (all by default) workers run with a live bus; their pids."""
        want = self.workers if count is None else count

        def ready() -> list[int] | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
            pids = sorted(self.ready_worker_pids())
            return pids if len(pids) >= want and len(self.worker_pids()) == want else None

        return list(wait_for(ready, timeout, f"{want} workers ready (log: {self.log_path})"))

    def _serving(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return requests.get(self.url + "/ready-check", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        # Workers stay in the arbiter's process group; every side process (barrel's
        # and the user's) runs in a group of its own.
        group = process_group(self.pid)
        return [p for p in children_of(self.pid)
                if process_group(p) == group and SIDE_PROCESS_MARK not in _cmdline(p)]

    def side_process_pids(self, text: str) -> list[int]:
        """The arbiter's children in a process group of their own whose command line holds ``text``."""
        return [p for p in children_of(self.pid) if process_group(p) == p and text in _cmdline(p)]

    def store_pids(self) -> list[int]:
        return [p for p in children_of(self.pid) if STORE_MODULE in _cmdline(p)]

    def broadcaster_pids(self) -> list[int]:
        return [p for p in children_of(self.pid) if BROADCASTER_MODULE in _cmdline(p)]

    def broadcaster_pid(self) -> int:
        pids = wait_for(self.broadcaster_pids, 10, "a broadcaster")
        assert len(pids) == 1, f"expected one broadcaster, found {pids}"
        return int(pids[0])

    def remember_pids(self) -> None:
        """Record every process of this instance, so stop() can kill leftovers by pid."""
        self.started_pids.update(children_of(self.pid))

    def runtime_dir(self) -> str:
        cmd = _cmdline(self.broadcaster_pid()).split()
        return cmd[cmd.index("--runtime-dir") + 1]

    def stop(self) -> None:
        if self.proc is None:
            return
        self.remember_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in self.started_pids:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.store_path) + suffix).unlink(missing_ok=True)


@contextmanager
def gunicorn(**kwargs: Any) -> Iterator[Gunicorn]:
    server = Gunicorn(**kwargs)
    try:
        yield server.start()
    finally:
        server.stop()


class Client:
    """A python-socketio client that records what it receives."""

    def __init__(self, url: str, transports: list[str] | None = None, path: str = "socket.io",
                 auth: Any = None) -> None:
        self.sio = socketio.Client(reconnection_delay=0.1, reconnection_delay_max=0.5)
        self.received: dict[str, list[Any]] = defaultdict(list)
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.sid: str | None = None
        self.answer = "42"
        for event in ("news", "direct", "room_news"):
            self.sio.on(event, self._recorder(event))
        self.sio.on("args", self._record_args)
        self.sio.on("question", self._answer)
        self.sio.on("connect", self._on_connect)
        self.sio.on("disconnect", self._on_disconnect)
        self.disconnects: list[str] = []  # why, each time (a test that waits in vain says so)
        self.sio.connect(url, transports=transports or ["websocket"], socketio_path=path, wait_timeout=10,
                         auth=auth)
        self._identify()

    def _record_args(self, *args: Any) -> None:
        with self.lock:
            self.received["args"].append(list(args))

    def _recorder(self, event: str) -> Callable[[Any], None]:
        def record(data: Any) -> None:
            with self.lock:
                self.received[event].append(data)

        return record

    def _answer(self, question: Any) -> str:
        with self.lock:
            self.received["question"].append(question)
        return f"{self.answer} from {self.pid}"

    def _on_connect(self) -> None:
        self.connects = getattr(self, "connects", 0) + 1

    def _on_disconnect(self, reason: Any = None) -> None:
        with self.lock:
            self.disconnects.append(f"{time.strftime('%H:%M:%S')} {reason}")

    def state(self) -> str:
        """Who this client is and what happened to its connection, for assertion messages."""
        return (f"client sid={self.sid} pid={self.pid} connected={self.sio.connected} "
                f"transport={self.sio.transport()} connects={getattr(self, 'connects', 0)} "
                f"disconnects={self.disconnects}")

    def _identify(self) -> None:
        me = self.sio.call("whoami", None, timeout=10)
        self.pid, self.sid = me["pid"], me["sid"]

    def reidentify(self) -> int | None:
        """Ask again which worker holds this client (after a reconnect); None if not connected."""
        try:
            self._identify()
        except Exception:
            return None
        return self.pid

    def got(self, event: str) -> list[Any]:
        with self.lock:
            return list(self.received[event])

    def call(self, event: str, data: Any = None, timeout: float = 15) -> Any:
        return self.sio.call(event, data, timeout=timeout)

    def close(self) -> None:
        try:
            self.sio.disconnect()
        except Exception:
            pass


class OnAWorker(Protocol):
    @property
    def pid(self) -> int | None: ...

    def close(self) -> None: ...


Held = TypeVar("Held", bound=OnAWorker)


def spread(connect: Callable[[], Held], workers: int, per_worker: int, max_attempts: int = 400) -> list[Held]:
    """Connect until every worker holds exactly ``per_worker`` clients; the kernel picks the worker.

    A client that lands on a worker that has its share already is closed and
    another one connects: the kernel need not spread connections evenly (a
    busy worker accepts later), but each new connection is another draw, so
    this ends within ``max_attempts`` connections however uneven the draws.
    """
    kept: list[Held] = []
    counts: Counter[int | None] = Counter()
    for _attempt in range(max_attempts):
        client = connect()
        if counts[client.pid] >= per_worker:
            client.close()
            continue
        kept.append(client)
        counts[client.pid] += 1
        if len(counts) == workers and min(counts.values()) >= per_worker:
            return kept
    for c in kept:
        c.close()
    raise AssertionError(f"{max_attempts} connections did not reach {workers} workers "
                         f"{per_worker} times each: {dict(counts)}")


def spread_clients(url: str, workers: int, per_worker: int = 2, **kwargs: Any) -> list[Client]:
    """``per_worker`` socket.io clients (python-socketio) on each of ``workers`` workers."""
    return spread(lambda: Client(url, **kwargs), workers, per_worker)
