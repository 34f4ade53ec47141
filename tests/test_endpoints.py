"""The runtime directory: private, per instance, owned by the workers' user, stale ones removed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gunicorn_barrel.bus import endpoints
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


def test_stale_runtime_dirs_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    stale = tmp_path / f"barrel-{_dead_pid()}-abcd"
    live = tmp_path / f"barrel-{os.getpid()}-efgh"
    other = tmp_path / "not-ours"
    for d in (stale, live, other):
        d.mkdir()
        (d / "pub.sock").write_text("")
    removed = endpoints.remove_stale_runtime_dirs(str(tmp_path))
    assert removed == [str(stale)]
    assert not stale.exists() and live.exists() and other.exists()


@pytest.mark.integration
def test_gunicorn_removes_a_crashed_runs_dir_at_start(tmp_path: Path) -> None:
    base = Path("/tmp") / f"barrel-test-base-{os.getpid()}"
    base.mkdir(exist_ok=True)
    try:
        stale = base / f"barrel-{_dead_pid()}-left"
        stale.mkdir()
        with gunicorn(workers=1, env={"BARREL_RUNTIME_DIR": str(base)}) as srv:
            assert not stale.exists()
            assert srv.runtime_dir().startswith(str(base) + "/")
    finally:
        for leftover in base.iterdir():
            endpoints.remove_runtime_dir(str(leftover))
        base.rmdir()
