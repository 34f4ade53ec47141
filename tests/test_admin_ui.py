"""The Socket.IO Admin UI over every worker: the chat demo with gunicorn_barrel.admin, -w 4.

The UI (npm @socket.io/admin-ui, served by the demo from node_modules) in
headless Chromium logs in and must list the sockets of all four workers and
each worker as a server. Its actions (the events it sends on the admin
namespace: join, leave, _disconnect) are sent by an admin client held by one
worker and must act on sockets held by the others.
"""
from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import socketio

from demos.chat import app as chat_app
from tests import browser_run
from tests.chat_client import ChatClient
from tests.harness import Gunicorn, gunicorn, spread, wait_for

pytestmark = pytest.mark.integration

WORKERS = 4
PASSWORD = uuid.uuid4().hex
BROWSER_TIMEOUT = 90
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    with gunicorn(app="demos.chat.app:wsgi", workers=WORKERS, env={"CHAT_ADMIN_PASSWORD": PASSWORD}) as srv:
        yield srv


@pytest.fixture
def chatters(server: Gunicorn) -> Iterator[list[ChatClient]]:
    clients = spread(lambda: ChatClient(server.url), WORKERS, per_worker=2)
    yield clients
    for client in clients:
        client.close()


class AdminClient:
    """What the Admin UI is on the wire: a client of the admin namespace, recording its events."""

    def __init__(self, url: str, password: str) -> None:
        self.sio = socketio.Client(reconnection=False)
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self.lock = threading.Lock()
        for event in ("config", "all_sockets", "room_joined", "room_left", "socket_disconnected",
                      "server_stats"):
            self.sio.on(event, self._recorder(event), namespace="/admin")
        self.sio.connect(url, namespaces=["/admin"], transports=["websocket"], wait_timeout=10,
                         auth={"username": "admin", "password": password})

    def _recorder(self, event: str) -> Any:
        def record(*args: Any) -> None:
            with self.lock:
                self.events.append((event, args))

        return record

    def got(self, event: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [args for name, args in self.events if name == event]

    def close(self) -> None:
        self.sio.disconnect()


def test_the_ui_lists_the_sockets_and_servers_of_every_worker(server: Gunicorn,
                                                              chatters: list[ChatClient]) -> None:
    files = {chat_app.ADMIN_UI / "index.html": f"{chat_app.ADMIN_UI} (npm package @socket.io/admin-ui: "
                                                "run `npm ci`)"}
    result = browser_run.run_script(
        "admin_ui", [server.url, PASSWORD, str(len(chatters)), str(WORKERS), str(browser_run.ARTIFACTS),
                     str(BROWSER_TIMEOUT)], BROWSER_TIMEOUT, files)
    assert sorted(result["sockets"]) == sorted(c.sid for c in chatters)
    assert sorted(s["serverId"].rsplit(":", 1)[1] for s in result["servers"]) == sorted(
        str(pid) for pid in server.worker_pids())


def test_a_wrong_password_is_refused(server: Gunicorn) -> None:
    with pytest.raises(socketio.exceptions.ConnectionError):
        AdminClient(server.url, "not-" + PASSWORD)


def test_admin_actions_act_on_sockets_of_every_worker(server: Gunicorn, chatters: list[ChatClient]) -> None:
    admin = AdminClient(server.url, PASSWORD)
    try:
        listed = wait_for(lambda: admin.got("all_sockets"), TIMEOUT, "all_sockets")[0][0]
        assert {s["id"] for s in listed if s["nsp"] == "/"} == {c.sid for c in chatters}
        assert {s["transport"] for s in listed if s["nsp"] == "/"} == {"websocket"}
        (admin_pid,) = {s["pid"] for s in listed if s["nsp"] == "/admin"}
        target = next(c for c in chatters if c.pid != admin_pid)
        room = "ops-" + uuid.uuid4().hex[:6]
        admin.sio.emit("join", ("/", room, target.sid), namespace="/admin")
        wait_for(lambda: any(a[1:3] == (room, target.sid) for a in admin.got("room_joined")), TIMEOUT,
                 "room_joined from the target's worker")
        admin.sio.emit("leave", ("/", room, target.sid), namespace="/admin")
        wait_for(lambda: any(a[1:3] == (room, target.sid) for a in admin.got("room_left")), TIMEOUT,
                 "room_left from the target's worker")
        admin.sio.emit("_disconnect", ("/", False, target.sid), namespace="/admin")
        wait_for(lambda: not target.sio.connected, TIMEOUT, "the target disconnected")
        assert all(c.sio.connected for c in chatters if c is not target)
        def servers() -> set[str]:
            return {args[0]["serverId"] for args in admin.got("server_stats")}

        wait_for(lambda: len(servers()) == WORKERS, TIMEOUT, "server_stats from every worker")
    finally:
        admin.close()

