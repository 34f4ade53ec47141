"""The set-up the README promises: `make demo` needs no root, and the suite leaves nothing in /tmp."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests import harness
from tests.harness import REPO, Gunicorn
from tests.redis_server import RedisServer


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_is_pip_npm_and_gunicorn_only() -> None:
    # Not the make that may run this suite (`make test`): its MAKEFLAGS/MAKELEVEL
    # would add "Entering directory" lines to the plan.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    plan = subprocess.run(["make", "--no-print-directory", "-n", "demo"], cwd=REPO, capture_output=True,
                          text=True, timeout=30, check=True, env=env).stdout
    assert "apt-get" not in plan, plan
    commands = [line.split()[:3] for line in plan.splitlines() if line.strip()]
    assert [c[1:3] if c[0].startswith("python") else c[:2] for c in commands] == [
        ["-m", "pip"], ["npm", "ci"], ["-m", "gunicorn"]], plan
    assert "apt-get install" in subprocess.run(["make", "-n", "test-tools"], cwd=REPO, capture_output=True,
                                               text=True, timeout=30, check=True).stdout


def test_instances_write_their_files_in_pytests_temporary_directory(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    base = tmp_path_factory.getbasetemp()
    srv = Gunicorn()
    for path in (srv.log_path, srv.store_path, RedisServer(port=harness.free_port()).log_path):
        assert base in path.parents, path
