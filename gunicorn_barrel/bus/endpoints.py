"""Where the bus lives: the private runtime directory and the ipc endpoints in it."""
from __future__ import annotations

import os
import shutil
import tempfile

PULL_SOCKET = "pull.sock"
PUB_SOCKET = "pub.sock"
STORE_SOCKET = "store.sock"


PREFIX = "barrel-"


def create_runtime_dir(base: str, owner_uid: int | None = None, owner_gid: int | None = None) -> str:
    """Create this instance's private directory (0700) under ``base``.

    The name carries the arbiter pid, and mkdtemp adds a random suffix, so two
    gunicorn instances on one host never share a directory by accident.
    Directories left by arbiters that died without cleaning up are removed.
    """
    remove_stale_runtime_dirs(base)
    path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base)
    os.chmod(path, 0o700)
    if owner_uid is not None and os.geteuid() == 0 and owner_uid != 0:
        # Workers drop privileges to gunicorn's user/group: they must reach the sockets.
        os.chown(path, owner_uid, owner_gid if owner_gid is not None else -1)
    return path


def remove_stale_runtime_dirs(base: str) -> list[str]:
    """Remove our user's runtime directories whose arbiter is no longer alive."""
    removed: list[str] = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    for entry in entries:
        pid = _arbiter_pid(entry.name)
        if pid is None or _alive(pid):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat().st_uid != os.geteuid():
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    return removed


def _arbiter_pid(name: str) -> int | None:
    if not name.startswith(PREFIX):
        return None
    pid = name[len(PREFIX):].split("-", 1)[0]
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_runtime_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


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
