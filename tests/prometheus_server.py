"""A Prometheus server of the test's own (Debian's ``prometheus`` package) on a free loopback port.

It scrapes the targets it is given every second, keeps its data in a
temporary directory, is asked through its HTTP API (``/api/v1/query``) and
is stopped by pid. Without the binary the tests that need it are skipped,
which tests/conftest.py turns into a failure under CI.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from tests import harness
from tests.harness import free_port, wait_for

SCRAPE_INTERVAL = "1s"


class PrometheusServer:
    """One prometheus process scraping ``jobs`` ({job: (host:port, metrics path)})."""

    def __init__(self, jobs: dict[str, tuple[str, str]], workdir: Path) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("prometheus is not installed (apt-get install prometheus; `make test-tools`)")
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log_path = harness.FILES_DIR / f"barrel-test-prometheus-{self.port}.log"
        self.config = workdir / "prometheus.yml"
        scrape = "".join(
            f"  - job_name: {job}\n    metrics_path: {path}\n    static_configs:\n"
            f"      - targets: ['{target}']\n"
            for job, (target, path) in jobs.items())
        self.config.write_text(f"global:\n  scrape_interval: {SCRAPE_INTERVAL}\n"
                               f"  scrape_timeout: {SCRAPE_INTERVAL}\nscrape_configs:\n{scrape}")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={self.config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
            )
        wait_for(self._ready, timeout, f"prometheus on {self.url} (log: {self.log_path})", interval=0.2)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n"
                                 + self.log_path.read_text(errors="replace"))
        try:
            return requests.get(self.url + "/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` now: [{"metric": {labels}, "value": float}, ...]."""
        answer = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=5).json()
        assert answer["status"] == "success", answer
        return [{"metric": r["metric"], "value": float(r["value"][1])} for r in answer["data"]["result"]]

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` (None while it has none)."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return result[0]["value"] if result else None

    def targets_up(self) -> bool:
        answer = requests.get(self.url + "/api/v1/targets", timeout=5).json()
        active = answer["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log_path.unlink(missing_ok=True)
