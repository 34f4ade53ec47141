"""The runtime directory: private, per instance, owned by the workers' user, stale ones removed."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gunicorn_barrel.runtime import endpoints
from tests.harness import gunicorn


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_runtime_dir_is_private_and_unique(tmp_path: Path) -> None:
    a = endpoints.create_runtime_dir(str(tmp_path))
    b = endpoints.create_runtime_dir(str(tmp_path))
    assert a != b
    for path in (a, b):
        assert os.stat(path).st_mode & 0o777 == 0o700
        assert os.path.basename(path).startswith(f"barrel-{os.getpid()}-")


def test_runtime_dir_belongs_to_the_workers_user(tmp_path: Path) -> None:
    path = endpoints.create_runtime_dir(str(tmp_path), owner_uid=65534, owner_gid=65534)
    expected = 65534 if os.geteuid() == 0 else os.geteuid()  # only root can give it away
    assert os.stat(path).st_uid == expected


def _runtime_dir_of_a_dead_arbiter(base: Path, name: str) -> Path:
    """A runtime dir as a SIGKILLed arbiter leaves it: its lock file, held by nobody."""
    path = base / name
    path.mkdir()
    (path / endpoints.LOCK_FILE).write_text("")
    (path / "pub.sock").write_text("")
    return path


def test_stale_runtime_dirs_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    live = endpoints.create_runtime_dir(str(tmp_path))
    stale = _runtime_dir_of_a_dead_arbiter(tmp_path, f"barrel-{_dead_pid()}-abcd")
    other = tmp_path / "not-ours"
    legacy = tmp_path / f"barrel-{_dead_pid()}-old"  # no lock file: an older version's, left alone
    for d in (other, legacy):
        d.mkdir()
        (d / "pub.sock").write_text("")
    try:
        removed = endpoints.remove_stale_runtime_dirs(str(tmp_path))
        assert removed == [str(stale)]
        assert not stale.exists() and os.path.isdir(live) and other.exists() and legacy.exists()
    finally:
        endpoints.remove_runtime_dir(live)
    assert endpoints.remove_stale_runtime_dirs(str(tmp_path)) == []  # removed and unlocked


def test_an_instance_sweeping_while_another_creates_its_dir_leaves_it_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The worst moment: another instance starts (and sweeps stale dirs) after
    # this one made its staging dir and lock file, before it locked it. Seen in
    # a full run, three instances starting together: FileNotFoundError at the rename.
    lock = fcntl.flock
    swept: list[list[str]] = []

    def sweep_then_lock(fd: int, operation: int) -> None:
        if not swept:  # the first lock taken: this instance's, about to lock its new dir
            swept.append(endpoints.remove_stale_runtime_dirs(str(tmp_path)))
        lock(fd, operation)

    monkeypatch.setattr(endpoints.fcntl, "flock", sweep_then_lock)
    made = endpoints.create_runtime_dir(str(tmp_path))
    monkeypatch.undo()
    try:
        assert swept == [[]]  # the other instance's sweep removed nothing
        assert endpoints.is_live(made) and sorted(os.listdir(made)) == [endpoints.LOCK_FILE]
    finally:
        endpoints.remove_runtime_dir(made)


def test_a_staging_dir_abandoned_without_a_lock_file_is_removed_once_old(tmp_path: Path) -> None:
    fresh, old = tmp_path / ".barrel-new-fresh", tmp_path / ".barrel-new-old"
    for d in (fresh, old):
        d.mkdir()
    os.utime(old, (0, 0))
    assert endpoints.remove_stale_runtime_dirs(str(tmp_path)) == [str(old)]
    assert fresh.exists()


def test_a_live_instance_whose_pid_looks_dead_keeps_its_dir(tmp_path: Path) -> None:
    """/tmp shared across PID namespaces: the arbiter's pid means nothing here; its lock does."""
    elsewhere = _runtime_dir_of_a_dead_arbiter(tmp_path, f"barrel-{_dead_pid()}-ns")
    holder = os.open(elsewhere / endpoints.LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # as that instance's arbiter holds it
        assert endpoints.remove_stale_runtime_dirs(str(tmp_path)) == []
        assert elsewhere.exists()
    finally:
        os.close(holder)
    assert endpoints.remove_stale_runtime_dirs(str(tmp_path)) == [str(elsewhere)]


@pytest.mark.integration
def test_gunicorn_removes_a_crashed_runs_dir_at_start(tmp_path: Path) -> None:
    base = Path("/tmp") / f"barrel-test-base-{os.getpid()}"
    base.mkdir(exist_ok=True)
    try:
        stale = _runtime_dir_of_a_dead_arbiter(base, f"barrel-{_dead_pid()}-left")
        with gunicorn(workers=1, env={"BARREL_RUNTIME_DIR": str(base)}) as srv:
            assert not stale.exists()
            assert srv.runtime_dir().startswith(str(base) + "/")
    finally:
        for leftover in base.iterdir():
            endpoints.remove_runtime_dir(str(leftover))
        base.rmdir()


def test_a_late_readiness_mark_does_not_bring_back_a_removed_dir(tmp_path: Path) -> None:
    path = endpoints.create_runtime_dir(str(tmp_path))
    endpoints.mark_worker_ready(path, 1234)
    assert endpoints.ready_workers(path) == {1234}
    endpoints.remove_runtime_dir(path)
    with pytest.raises(FileNotFoundError):
        endpoints.mark_worker_ready(path, 1234)
    assert not os.path.exists(path)


def test_only_a_dead_arbiters_process_removes_its_dir(tmp_path: Path) -> None:
    path = endpoints.create_runtime_dir(str(tmp_path))
    endpoints.remove_if_orphaned(path, os.getppid())  # our parent lives: kept
    assert os.path.isdir(path)
    endpoints.remove_if_orphaned(path, _dead_pid())
    assert not os.path.exists(path)
