"""Where the bus lives: the private runtime directory and the ipc endpoints in it.

Which directories are stale: each holds a lock file that its arbiter keeps
locked (``flock``) for as long as it lives (its forked workers share the
lock). A directory whose lock can be taken belongs to nobody. Why not
``kill(pid, 0)`` on the pid in its name: with the runtime base shared across
PID namespaces (containers of one uid sharing /tmp), a live arbiter's pid
looks dead from another namespace, and its directory would be removed.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import time
from typing import Any

PULL_SOCKET = "pull.sock"
PUB_SOCKET = "pub.sock"
STORE_SOCKET = "store.sock"
LOCK_FILE = "instance.lock"

PREFIX = "barrel-"
# A directory is made under this name, locked, then renamed to its final
# name: a directory named PREFIX... always has its lock file.
_STAGING_PREFIX = ".barrel-new-"
_STAGING_ABANDONED = 600.0

# runtime dir -> the descriptor of its lock file, held while this process runs the instance
_locks: dict[str, int] = {}


def create_runtime_dir(base: str, owner_uid: int | None = None, owner_gid: int | None = None) -> str:
    """Create this instance's private directory (0700) under ``base``, locked while this process lives.

    The name carries the arbiter pid, and mkdtemp adds a random suffix, so two
    gunicorn instances on one host never share a directory by accident.
    Directories left by arbiters that died without cleaning up are removed.
    """
    remove_stale_runtime_dirs(base)
    staging = tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=base)
    # The lock file gets its name once locked: another instance sweeping stale
    # directories meanwhile finds no lock file here, so it leaves this one alone.
    unnamed = os.path.join(staging, "." + LOCK_FILE)
    lock = os.open(unnamed, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.rename(unnamed, os.path.join(staging, LOCK_FILE))
    suffix = os.path.basename(staging)[len(_STAGING_PREFIX):]
    path = os.path.join(base, f"{PREFIX}{os.getpid()}-{suffix}")
    os.rename(staging, path)
    _locks[path] = lock
    os.chmod(path, 0o700)
    if owner_uid is not None and os.geteuid() == 0 and owner_uid != 0:
        # Workers drop privileges to gunicorn's user/group: they must reach the sockets.
        os.chown(path, owner_uid, owner_gid if owner_gid is not None else -1)
    return path


def remove_stale_runtime_dirs(base: str) -> list[str]:
    """Remove our user's runtime directories whose lock nobody holds.

    A directory without a lock file (made by an older gunicorn_barrel) is
    left alone: nothing tells whether its instance lives. A staging directory
    without one is an instance being created, unless it is older than
    ``_STAGING_ABANDONED`` seconds (its creator died within those microseconds).
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith((PREFIX, _STAGING_PREFIX)):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != os.geteuid():
                continue
        except OSError:
            continue
        if _unlocked(entry.path) or _abandoned_staging(entry):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def _abandoned_staging(entry: os.DirEntry[str]) -> bool:
    """A staging directory whose creator died before it named its lock file."""
    if not entry.name.startswith(_STAGING_PREFIX) or os.path.exists(os.path.join(entry.path, LOCK_FILE)):
        return False
    try:
        return time.time() - entry.stat().st_mtime > _STAGING_ABANDONED
    except OSError:
        return False


def is_live(path: str) -> bool:
    """True if ``path`` is a runtime directory whose arbiter holds its lock (its instance runs)."""
    return os.path.exists(os.path.join(path, LOCK_FILE)) and not _unlocked(path)


def _unlocked(path: str) -> bool:
    """True if ``path`` has a lock file that no live process holds."""
    try:
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # held: its instance is alive
    finally:
        os.close(fd)  # releases the lock if we took it
    return True


def remove_runtime_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    lock = _locks.pop(path, None)
    if lock is not None:
        os.close(lock)


def remove_if_orphaned(path: str, arbiter_pid: int) -> None:
    """Remove ``path`` if its arbiter died without cleaning up (called by each of its processes at exit).

    The broadcaster removes it first; a worker or the store still exiting may
    have put a file back in meanwhile, so whichever of them leaves last removes it again.
    """
    if os.getppid() != arbiter_pid:
        remove_runtime_dir(path)


def pull_endpoint(runtime_dir: str) -> str:
    return "ipc://" + os.path.join(runtime_dir, PULL_SOCKET)


def pub_endpoint(runtime_dir: str) -> str:
    return "ipc://" + os.path.join(runtime_dir, PUB_SOCKET)


def store_endpoint(runtime_dir: str) -> str:
    return "ipc://" + os.path.join(runtime_dir, STORE_SOCKET)


def mark_ready(runtime_dir: str, pid: int, name: str = "broadcaster") -> None:
    """Tell the supervisor that side process ``name`` (``pid``) has bound its sockets."""
    tmp = os.path.join(runtime_dir, f".{name}.ready.{pid}")
    with open(tmp, "w") as fh:
        fh.write(str(pid))
    os.replace(tmp, os.path.join(runtime_dir, f"{name}.ready"))


def ready_pid(runtime_dir: str, name: str = "broadcaster") -> int | None:
    """The pid of side process ``name`` that last reported ready, if any."""
    try:
        with open(os.path.join(runtime_dir, f"{name}.ready")) as fh:
            return int(fh.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


WORKERS_DIR = "workers"


def mark_worker_ready(runtime_dir: str, pid: int) -> None:
    """Record that worker ``pid`` serves with a live bus (read by tests and operators)."""
    directory = os.path.join(runtime_dir, WORKERS_DIR)
    try:
        # mkdir, not makedirs: a late mark must not bring back a removed runtime dir.
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    with open(os.path.join(directory, str(pid)), "w") as fh:
        fh.write(str(pid))


def unmark_worker(runtime_dir: str, pid: int) -> None:
    try:
        os.unlink(os.path.join(runtime_dir, WORKERS_DIR, str(pid)))
    except FileNotFoundError:
        pass


def ready_workers(runtime_dir: str) -> set[int]:
    """The pids of workers that marked themselves ready (a killed worker's mark may remain)."""
    try:
        return {int(name) for name in os.listdir(os.path.join(runtime_dir, WORKERS_DIR)) if name.isdigit()}
    except OSError:
        return set()


def write_status(runtime_dir: str, status: dict[str, Any], name: str = "broadcaster") -> None:
    """Replace side process ``name``'s status file (JSON) in one step: readers never see half."""
    tmp = os.path.join(runtime_dir, f".{name}.status.{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(status, fh)
    os.replace(tmp, os.path.join(runtime_dir, f"{name}.status.json"))


def read_status(runtime_dir: str, name: str = "broadcaster") -> dict[str, Any] | None:
    """What side process ``name`` last wrote in its status file, if anything."""
    try:
        with open(os.path.join(runtime_dir, f"{name}.status.json")) as fh:
            status = json.load(fh)
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None
