"""socket.io-client (npm) clients in a node subprocess, driven by tests over stdio.

tests/js/sio_client.mjs connects the clients and answers JSON-line commands.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.harness import REPO, Gunicorn
from tests.json_lines import JsonLinesProcess

NODE = shutil.which("node")
SCRIPT = REPO / "tests" / "js" / "sio_client.mjs"
CLIENT_PACKAGE = REPO / "node_modules" / "socket.io-client"
STARTUP_TIMEOUT = 60.0
NODE_MISSING_REASON = f"needs `node` on PATH and {CLIENT_PACKAGE} (run `npm ci` in {REPO})"


def all_workers_serving(srv: Gunicorn) -> None:
    """Wait until every worker serves with a live bus (the harness's readiness marks)."""
    srv.wait_workers_ready()


class NodeClients(JsonLinesProcess):
    """tests/js/sio_client.mjs as a subprocess: commands to its stdin, JSON lines from its stdout."""

    def __init__(self, url: str, transports: str, count: int, stderr_path: Path) -> None:
        assert NODE is not None
        super().__init__([NODE, str(SCRIPT), url, transports, str(count), str(STARTUP_TIMEOUT)],
                         stderr_path, exit_wait=5.0)

    def ask(self, cmd: str, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        self.send({"cmd": cmd})
        return self.expect(kind, timeout)

    def __enter__(self) -> NodeClients:
        return self


@contextmanager
def spread_node_clients(
    srv: Gunicorn, transports: str, count: int, stderr_path: Path, workers: int = 2, attempts: int = 20
) -> Iterator[tuple[NodeClients, list[dict[str, Any]]]]:
    """NodeClients whose ``count`` clients are held by at least ``workers`` workers.

    Idle gunicorn workers accept unevenly (one may take every connection of
    a quick burst): when that happens the clients are closed and opened again.
    """
    for _attempt in range(attempts):
        js = NodeClients(srv.url, transports, count, stderr_path)
        try:
            clients = list(js.expect("ready", STARTUP_TIMEOUT + 10)["clients"])
            if len({c["pid"] for c in clients}) >= workers:
                yield js, clients
                return
        finally:
            js.stop()
    raise AssertionError(f"{count} node clients never spread over {workers} workers in {attempts} tries")
