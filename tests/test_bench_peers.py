"""The peer benchmark's driver runs end to end on a tiny load (figures are not checked: speed is bench/'s)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import REPO
from tests.node_clients import CLIENT_PACKAGE, NODE

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(NODE is None or not (REPO / "node_modules" / "socket.io").exists()
                       or not CLIENT_PACKAGE.exists(), reason="needs node and `npm ci`"),
]
CLIENTS = 200


def test_peers_driver_writes_a_table_with_every_figure(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "bench.peers", "--servers", "barrel-2,node-2",
           "--idle-clients", str(CLIENTS), "--clients", str(CLIENTS), "--fixed-rate", "2000",
           "--fixed-seconds", "1", "--max-steps", "1", "--quiet-wait", "0",
           "--hop-rate", "1000", "--hop-seconds", "1", "--out", str(tmp_path),
           "--log-dir", str(tmp_path / "logs")]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "peers.json").read_text())
    for key in ("barrel-2", "node-2"):
        server = results["servers"][key]
        assert server["idle"]["clients"] == CLIENTS and server["idle"]["failed"] == 0
        assert sorted(server["spread"]["by_worker"].values()) == [CLIENTS // 2, CLIENTS // 2]
        fixed = server["fixed"]
        assert fixed["sent"] == 10 and fixed["received"] == fixed["expected"] == 10 * CLIENTS, fixed
    for backend in ("barrel", "redis"):
        assert results["bus_hop"][backend]["received"] == results["bus_hop"][backend]["sent"] == 1000
    table = (tmp_path / "peers.md").read_text()
    for heading in ("Deliveries/s", "One-way latency", "Idle WebSocket", "bus hop", "Conditions"):
        assert heading in table
