"""Many clients per worker: worker_connections in the example conf, the open-files limit raised.

gunicorn's default worker_connections (1,000) leaves later clients hanging in
the listen queue, and a soft open-files limit of 1,024 (common for services)
makes a worker refuse them: the example conf sets 10,000 and the arbiter
raises its soft limit, inherited by the workers (runtime/open_files.py).
"""
from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from gunicorn_barrel.runtime import open_files
from tests.harness import REPO, Client, Gunicorn, wait_for
from tests.node_clients import NodeClients

pytestmark = pytest.mark.integration

CLIENTS = 1_100  # more than gunicorn's default worker_connections
SOFT_AT_START = 1_024

PROBE = """
import json, resource, sys
from gunicorn_barrel.runtime import open_files
soft, hard = (int(x) for x in sys.argv[1:3])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
found = open_files.ensure(10_000)
print(json.dumps({"soft": found.soft, "before": found.soft_before, "raised": found.raised,
                  "enough": found.enough, "now": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}))
"""


def _ensure_under(soft: int, hard: int) -> dict[str, object]:
    # In a child process: a lowered hard limit cannot be raised again.
    out = subprocess.run([sys.executable, "-c", PROBE, str(soft), str(hard)], cwd=REPO, text=True,
                         capture_output=True, check=True).stdout
    return dict(json.loads(out))


def test_the_soft_limit_is_raised_to_what_worker_connections_need_up_to_the_hard_one() -> None:
    needed = 10_000 + open_files.SPARE
    assert _ensure_under(1_024, 20_000) == {"soft": needed, "before": 1_024, "raised": True,
                                             "enough": True, "now": needed}
    assert _ensure_under(1_024, 2_048) == {"soft": 2_048, "before": 1_024, "raised": True,
                                            "enough": False, "now": 2_048}
    assert _ensure_under(15_000, 20_000) == {"soft": 15_000, "before": 15_000, "raised": False,
                                              "enough": True, "now": 15_000}  # never lowered


def _soft_open_files(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-files line in /proc/{pid}/limits")


def test_one_worker_of_the_example_conf_holds_more_than_a_thousand_clients(tmp_path: Path) -> None:
    srv = Gunicorn(workers=1)
    srv.cmd = ["prlimit", f"--nofile={SOFT_AT_START}:", "--", *srv.cmd]  # a service's usual soft limit
    probe: Client | None = None
    js: NodeClients | None = None
    try:
        srv.start()
        (worker,) = srv.worker_pids()
        assert _soft_open_files(worker) == 10_000 + open_files.SPARE
        assert f"open-files limit raised from {SOFT_AT_START} to {10_000 + open_files.SPARE}" in srv.log()
        js = NodeClients(srv.url, "websocket", CLIENTS, tmp_path / "node.stderr")
        ready = js.expect("ready", 120)["clients"]
        assert len(ready) == CLIENTS and {c["pid"] for c in ready} == {worker}
        token = uuid.uuid4().hex
        probe = Client(srv.url)
        probe.call("broadcast", {"token": token})

        def everyone_got_it() -> bool:
            assert js is not None
            return all({"token": token} in got for got in js.ask("news?", "news", timeout=30)["news"])

        wait_for(everyone_got_it, 30, f"the broadcast at all {CLIENTS} clients", interval=0.5)
    finally:
        if probe is not None:
            probe.close()
        if js is not None:
            js.stop()
        srv.stop()
