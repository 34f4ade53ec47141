"""A node script as a subprocess: JSON-line commands to its stdin, JSON lines from its stdout.

The tests' socket.io-client drivers, the browser scripts and the soak's load
generator all talk this way; this class holds the plumbing (a reader thread
and a queue, so every read has a deadline) and the stop-by-pid.
"""
from __future__ import annotations

import json
import queue
import subprocess
import threading
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from tests.harness import REPO


class JsonLinesProcess:
    """One node process, run with cwd = the repo so that node_modules resolves."""

    name = "node"  # for messages

    def __init__(self, cmd: list[str], stderr_path: Path, exit_wait: float = 5.0) -> None:
        self.stderr_path = stderr_path
        self.exit_wait = exit_wait
        with open(stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
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

    def send(self, command: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        """The next message, which must be of type ``kind``, within ``timeout`` seconds."""
        try:
            message = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no {kind!r} from {self.name} within {timeout} s{self._stderr()}") from None
        if message is None:
            raise AssertionError(f"{self.name} exited ({self.proc.poll()}) before {kind!r}{self._stderr()}")
        assert message.get("type") == kind, (
            f"expected {kind!r} from {self.name}, got {message}{self._stderr()}")
        return message

    def _stderr(self) -> str:
        text = self.stderr_path.read_text(errors="replace").strip()
        return f"\nnode stderr:\n{text[-3000:]}" if text else ""

    def stop(self) -> None:
        """Ask the script to exit; kill it by pid if it has not within ``exit_wait`` seconds."""
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.send({"cmd": "exit"})
                self.proc.stdin.close()
            self.proc.wait(self.exit_wait)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> JsonLinesProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
