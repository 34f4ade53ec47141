"""Suite-wide rules: under CI (CI set), a skipped test fails the run.

Every integration test starts what it needs (gunicorn, node); a skip in CI
would mean a part of the product went unchecked.
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests import harness
from tests.harness import Client, Gunicorn, spread_clients
from tests.redis_server import RedisServer


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not os.environ.get("CI"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        names = ", ".join(getattr(r, "nodeid", "?") for r in skipped[:10])
        reporter.write_line(f"CI: {len(skipped)} test(s) skipped, which CI does not allow: {names}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def instance_files_in_pytest_tmp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Gunicorn and redis-server logs and store files go to pytest's temporary directory, not /tmp."""
    harness.FILES_DIR = tmp_path_factory.mktemp("instances")


@pytest.fixture(scope="module")
def per_worker(server: Gunicorn) -> Iterator[list[Client]]:
    """One client on each worker of the module's ``server`` (the store and event tests)."""
    clients = spread_clients(server.url, server.workers, per_worker=1)
    yield list({c.pid: c for c in clients}.values())
    for c in clients:
        c.close()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of the module's own (tests/redis_server.py)."""
    srv = RedisServer()
    try:
        yield srv.start()
    finally:
        srv.stop()
