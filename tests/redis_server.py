"""A redis-server of the test's own on a free loopback port (fixture: conftest.redis_server).

No persistence; started and stopped by pid; restartable on the same port (outage
tests). redis-server is required: without it the Redis tests fail (CI installs
it), they are not skipped.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence

import pytest
import redis

from tests import harness
from tests.harness import free_port, wait_for


class RedisServer:
    """One redis-server process on a loopback port; restartable on the same port."""

    def __init__(self, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server): the Redis "
                        "tests need it and must not be skipped", pytrace=False)
        self.binary = binary
        self.extra_args = list(extra_args)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log_path = harness.FILES_DIR / f"barrel-test-redis-{self.port}.log"
        # Its working directory: a replica writes the RDB of its first sync there.
        self.dir = harness.FILES_DIR / f"barrel-test-redis-{self.port}.d"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                                  socket_connect_timeout=2)

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.dir.mkdir(exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._answers, timeout, f"redis-server on port {self.port} (log: {self.log_path})")
        return self

    def command(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", str(self.dir), *self.extra_args]

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.proc.returncode}:\n"
                                 + self.log_path.read_text(errors="replace"))
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # in case a test left it stopped
        self.kill()
        self.log_path.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)
