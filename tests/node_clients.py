"""socket.io-client (npm) clients in a node subprocess, driven by tests over stdio.

tests/js/sio_client.mjs connects the clients and answers JSON-line commands.
"""
from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import requests

from tests.harness import REPO, Gunicorn, wait_for

NODE = shutil.which("node")
SCRIPT = REPO / "tests" / "js" / "sio_client.mjs"
CLIENT_PACKAGE = REPO / "node_modules" / "socket.io-client"
STARTUP_TIMEOUT = 60.0
NODE_MISSING_REASON = f"needs `node` on PATH and {CLIENT_PACKAGE} (run `npm ci` in {REPO})"


def all_workers_serving(srv: Gunicorn) -> None:
    """Wait until every worker has answered a plain request (each on a new connection)."""
    seen: set[int] = set()

    def all_seen() -> bool:
        body = requests.get(srv.url + "/plain", timeout=5).text
        seen.add(int(body.rsplit(" ", 1)[1]))
        return seen >= set(srv.worker_pids())

    wait_for(all_seen, 30, f"every worker serving (seen {seen}; log: {srv.log_path})", interval=0.01)


class NodeClients:
    """tests/js/sio_client.mjs as a subprocess: commands to its stdin, JSON lines from its stdout."""

    def __init__(self, url: str, transports: str, count: int, stderr_path: Path) -> None:
        assert NODE is not None
        self.stderr_path = stderr_path
        with open(stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                [NODE, str(SCRIPT), url, transports, str(count), str(STARTUP_TIMEOUT)],
                cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
            )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stdout: IO[str]) -> None:
        for line in stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                self.lines.put({"type": "unparsable", "line": line})
        self.lines.put(None)  # EOF

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        """The next message from node, which must be of type ``kind``, within ``timeout`` seconds."""
        try:
            message = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {kind!r} from node within {timeout} s{self._stderr()}") from None
        if message is None:
            raise AssertionError(f"node exited ({self.proc.poll()}) before {kind!r}{self._stderr()}")
        assert message.get("type") == kind, f"expected {kind!r} from node, got {message}{self._stderr()}"
        return message

    def ask(self, cmd: str, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd}) + "\n")
        self.proc.stdin.flush()
        return self.expect(kind, timeout)

    def _stderr(self) -> str:
        text = self.stderr_path.read_text(errors="replace").strip()
        return f"\nnode stderr:\n{text[-3000:]}" if text else ""

    def stop(self) -> None:
        """Ask node to exit; kill it by pid if it does not within 5 s."""
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(json.dumps({"cmd": "exit"}) + "\n")
                self.proc.stdin.close()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> NodeClients:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
