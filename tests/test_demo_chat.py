"""The chat demo (demos/chat) under real gunicorn -w 4 with the example config.

python-socketio clients (long-polling, then WebSocket), spread over all 4 workers, join rooms
and talk; the page, its script and the browser socket.io client (served from
node_modules, installed by `npm ci`) are fetched over HTTP.

"Not received" is checked behind fences: bus frames from one worker reach
every other worker in the order they were sent, and a worker writes to one
socket in order, so a fence sent after a message arrives after it.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from demos.chat import app as chat_app
from tests.chat_client import ChatClient
from tests.harness import Gunicorn, gunicorn, spread, wait_for

pytestmark = pytest.mark.integration

WORKERS = 4
APP = "demos.chat.app:wsgi"


def spread_chat_clients(url: str, workers: int, per_worker: int) -> list[ChatClient]:
    return spread(lambda: ChatClient(url), workers, per_worker)


def one_per_worker(clients: list[ChatClient]) -> list[ChatClient]:
    return list({c.pid: c for c in reversed(clients)}.values())


@pytest.fixture(scope="module")
def server() -> Iterator[Gunicorn]:
    with gunicorn(app=APP, workers=WORKERS) as srv:
        yield srv


@pytest.fixture()
def clients(server: Gunicorn) -> Iterator[list[ChatClient]]:
    group = spread_chat_clients(server.url, WORKERS, per_worker=2)
    yield group
    for c in group:
        c.close()


def test_hello_on_connect_names_the_worker(server: Gunicorn, clients: list[ChatClient]) -> None:
    assert {c.pid for c in clients} == set(server.worker_pids())
    for c in clients:
        assert c.hello == {"pid": c.pid, "sid": c.sid}
        assert len(c.got("hello")) == 1


def test_room_members_on_different_workers_see_each_message_exactly_once(
    clients: list[ChatClient],
) -> None:
    room, other = "room-" + uuid.uuid4().hex[:8], "other-" + uuid.uuid4().hex[:8]
    members = one_per_worker(clients)
    assert len({m.pid for m in members}) == WORKERS
    outsiders = [c for c in clients if c not in members]
    # every outsider shares its worker with a member: rooms, not workers, filter
    assert {c.pid for c in outsiders} <= {m.pid for m in members}
    for i, m in enumerate(members):
        m.join(room, f"nick{i}")
    for c in outsiders:
        c.join(other, "outsider")

    said = {f"hello from nick{i} {uuid.uuid4().hex}": m for i, m in enumerate(members)}
    for text, m in said.items():
        m.say(text)
    for m in members:
        wait_for(lambda m=m: set(said) <= set(m.texts(room)), 10, f"all messages at member on {m.pid}")
    fences = {f"fence {uuid.uuid4().hex}": m for m in members}
    for text, m in fences.items():
        m.say(text)
    for m in members:
        wait_for(lambda m=m: set(fences) <= set(m.texts(room)), 10, f"all fences at member on {m.pid}")

    for i, m in enumerate(members):
        texts = m.texts(room)
        for text in said:
            assert texts.count(text) == 1, f"member on {m.pid} got {text!r} {texts.count(text)} times"
        mine = [msg for msg in m.got("chat") if msg["text"] in said]
        assert {msg["nick"] for msg in mine} == {f"nick{j}" for j in range(len(members))}
        assert all(msg["room"] == room for msg in m.got("chat"))
        # message pids name the sender's worker
        assert all(msg["pid"] == said[msg["text"]].pid for msg in mine)
        # join notices of the members who came in later, each once
        notices = [s["text"] for s in m.got("system") if s["room"] == room]
        for j in range(i + 1, len(members)):
            assert notices.count(f"nick{j} joined") == 1, notices

    for c in outsiders:
        fence = f"outsider fence {uuid.uuid4().hex}"
        c.say(fence)
        wait_for(lambda c=c, fence=fence: fence in c.texts(), 10, "outsider's own fence")
        assert not set(c.texts()) & (set(said) | set(fences)), f"outsider on {c.pid} got room messages"
        assert all(msg["room"] == other for msg in c.got("chat"))


def test_leaver_gets_no_more_messages(clients: list[ChatClient]) -> None:
    room, limbo = "room-" + uuid.uuid4().hex[:8], "limbo-" + uuid.uuid4().hex[:8]
    members = one_per_worker(clients)
    for i, m in enumerate(members):
        m.join(room, f"nick{i}")
    sender, leaver, *stayers = members

    assert leaver.call("leave") == {"ok": True, "room": room}
    assert leaver.call("leave") == {"ok": False, "error": "not in a room"}
    for m in (sender, *stayers):
        wait_for(lambda m=m: any(s["text"] == "nick1 left" for s in m.got("system")), 10, "left notice")
    leaver.join(limbo, "nick1")

    after = f"after the leave {uuid.uuid4().hex}"
    sender.say(after)
    for m in (sender, *stayers):
        wait_for(lambda m=m: after in m.texts(room), 10, f"message at member on {m.pid}")
    # The fence travels from sender's worker behind `after`, to leaver's worker.
    sender.join(limbo, "nick0")
    fence = f"fence {uuid.uuid4().hex}"
    sender.say(fence)
    wait_for(lambda: fence in leaver.texts(limbo), 10, "fence at the leaver")
    assert after not in leaver.texts()


def test_invalid_requests_are_refused(clients: list[ChatClient]) -> None:
    c = clients[0]
    assert c.call("say", {"text": "nobody hears"}) == {"ok": False, "error": "join a room first"}
    assert c.call("join", {"room": "", "nick": "x"})["ok"] is False
    assert c.call("join", {"room": "r", "nick": "n" * 100})["ok"] is False
    assert c.call("join", "not a dict")["ok"] is False
    c.join("r-" + uuid.uuid4().hex[:8], "x")
    assert c.call("say", {"text": "   "})["ok"] is False
    assert c.call("say", None)["ok"] is False  # no argument at all
    assert c.call("join")["ok"] is False


def test_index_page_and_script(server: Gunicorn) -> None:
    page = requests.get(server.url + "/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert '<script src="/vendor/socket.io.min.js"></script>' in page.text
    assert '<script src="/chat.js"></script>' in page.text
    script = requests.get(server.url + "/chat.js", timeout=10)
    assert script.status_code == 200
    assert "javascript" in script.headers["Content-Type"]
    assert "transports:" not in script.text  # default transports: polling, then the upgrade
    assert requests.get(server.url + "/no-such-page", timeout=10).status_code == 404


@pytest.mark.skipif(
    not chat_app.SOCKETIO_CLIENT_JS.is_file(),
    reason="node_modules/socket.io-client missing: run `npm ci` in the repository root",
)
def test_browser_client_served_from_node_modules(server: Gunicorn) -> None:
    reply = requests.get(server.url + "/vendor/socket.io.min.js", timeout=10)
    assert reply.status_code == 200
    assert "javascript" in reply.headers["Content-Type"]
    assert reply.content == chat_app.SOCKETIO_CLIENT_JS.read_bytes()
    assert b"Socket.IO v4" in reply.content[:200]


def test_missing_node_modules_answers_404_saying_npm_ci(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """In-process: the demo's WSGI app with the client file pointed somewhere empty."""
    missing = tmp_path / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"
    entry = dict(chat_app.wsgi.static_files[chat_app.VENDOR_PATH], filename=str(missing))
    monkeypatch.setitem(chat_app.wsgi.static_files, chat_app.VENDOR_PATH, entry)
    status: list[str] = []

    def start_response(s: str, headers: list[tuple[str, str]]) -> None:
        status.append(s)

    body = b"".join(chat_app.wsgi({"PATH_INFO": chat_app.VENDOR_PATH, "REQUEST_METHOD": "GET"},
                                  start_response))
    assert status == ["404 Not Found"]
    assert b"npm ci" in body
