"""The official JavaScript client (socket.io-client v4, under node) across workers.

gunicorn -w 4 with the example config; tests/js/sio_client.mjs connects 16
socket.io-client clients, over long-polling only or with the default
polling-then-WebSocket upgrade, and answers the test's commands as JSON lines.
A python client on one worker broadcasts and calls JS clients held by others.
"""
from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import uuid
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import pytest
import requests

from tests.harness import REPO, Client, Gunicorn, gunicorn, wait_for

NODE = shutil.which("node")
SCRIPT = REPO / "tests" / "js" / "sio_client.mjs"
CLIENT_PACKAGE = REPO / "node_modules" / "socket.io-client"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        NODE is None or not CLIENT_PACKAGE.is_dir(),
        reason=f"needs `node` on PATH and {CLIENT_PACKAGE} (run `npm ci` in {REPO})",
    ),
]

WORKERS = 4
JS_CLIENTS = 16
STARTUP_TIMEOUT = 60.0


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


def wait_all_upgraded(js: NodeClients, where: str) -> None:
    """Every JS client on WebSocket: its upgrade request, accepted by any worker, reached the owner."""

    def all_upgraded() -> bool:
        return all(t == "websocket" for t in js.ask("transports?", "transports")["transports"])

    wait_for(all_upgraded, 20, "every JS client upgraded to websocket" + where, interval=0.2)


def news_if_everyone_has(js: NodeClients, payload: dict[str, str]) -> list[list[Any]] | None:
    """Every JS client's news, if each has received ``payload``; else None."""
    news: list[list[Any]] = js.ask("news?", "news")["news"]
    return news if all(payload in n for n in news) else None


@pytest.mark.parametrize("transports", ["polling", "default"])
def test_js_clients_across_workers(transports: str, tmp_path: Path) -> None:
    with gunicorn(app="tests.apps.sio_app:wsgi", workers=WORKERS) as srv:
        where = f" (gunicorn log: {srv.log_path})"
        all_workers_serving(srv)
        with NodeClients(srv.url, transports, JS_CLIENTS, tmp_path / "node.stderr") as js:
            # A connect error, failed whoami or timeout would come as an error message instead.
            clients = js.expect("ready", STARTUP_TIMEOUT + 10)["clients"]
            assert len(clients) == JS_CLIENTS
            spread = Counter(c["pid"] for c in clients)
            print(f"{transports}: JS clients per worker pid: {dict(spread)}")
            assert set(spread) <= set(srv.worker_pids()), where
            assert len(spread) >= WORKERS - 1, f"JS clients on too few workers: {dict(spread)}{where}"
            sids = [c["sid"] for c in clients]

            if transports == "default":
                wait_all_upgraded(js, where)
            state = js.ask("transports?", "transports")
            expected = "websocket" if transports == "default" else "polling"
            assert state["transports"] == [expected] * JS_CLIENTS, where
            assert state["sids"] == sids, "a JS client reconnected" + where

            py = Client(srv.url)
            try:
                token = {"token": uuid.uuid4().hex}
                assert py.call("broadcast", token) == "ok"
                wait_for(lambda: news_if_everyone_has(js, token), 20, "the broadcast at all JS" + where, 0.2)
                # A duplicate would arrive behind the first copy: once a second
                # broadcast has reached all, the first must have arrived once.
                fence = {"token": uuid.uuid4().hex}
                assert py.call("broadcast", fence) == "ok"
                news = wait_for(lambda: news_if_everyone_has(js, fence), 20, "the fence" + where, 0.2)
                counts = [n.count(token) for n in news]
                assert counts == [1] * JS_CLIENTS, f"copies of the broadcast per JS client: {counts}{where}"

                target = next(c for c in clients if c["pid"] != py.pid)
                reply = py.call("ask", {"to": target["sid"], "question": "who are you?"}, timeout=20)
                assert reply == {"answer": f"js {target['pid']}", "pid": py.pid}, where
            finally:
                py.close()
            assert js.ask("transports?", "transports")["sids"] == sids, "a JS client reconnected" + where
