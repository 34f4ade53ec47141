"""The official JavaScript client (socket.io-client v4, under node) across workers.

gunicorn -w 4 with the example config; tests/js/sio_client.mjs connects 16
socket.io-client clients, over long-polling only or with the default
polling-then-WebSocket upgrade, and answers the test's commands as JSON lines.
A python client on one worker broadcasts and calls JS clients held by others.
"""
from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Client, gunicorn, wait_for
from tests.node_clients import (
    CLIENT_PACKAGE,
    NODE,
    NODE_MISSING_REASON,
    STARTUP_TIMEOUT,
    NodeClients,
    all_workers_serving,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        NODE is None or not CLIENT_PACKAGE.is_dir(),
        reason=NODE_MISSING_REASON,
    ),
]

WORKERS = 4
JS_CLIENTS = 16


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
