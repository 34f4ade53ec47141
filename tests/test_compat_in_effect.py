"""The patches really run where users depend on them: a real engine.io server, driven in this process.

If engine.io stopped calling ``schedule_ping`` at connect and at PONG,
``_websocket_handler`` for an upgrade, ``Socket.send`` from ``Server.send`` or
``generate_id`` for new sessions, these tests fail: a check of shapes alone
would not see it, and the optimisations would switch off silently (or
packets wait unsent). Everything runs in gevent greenlets of this process
over a socket pair; the patches are undone after each test.
"""
from __future__ import annotations

import base64
import gc
import io
import logging
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import engineio
import gevent
import gevent.socket
import pytest
from engineio.async_drivers import gevent as engineio_gevent
from engineio.base_server import BaseServer
from engineio.socket import Socket

from gunicorn_barrel.compat import apply, engineio_lean, engineio_sessions, websocket_driver
from gunicorn_barrel.runtime import sids
from gunicorn_barrel.worker import backpressure
from gunicorn_barrel.ws.connection import SOCKET_KEY, BarrelWebSocket
from tests.test_websocket_worker import RawWebSocket

PING_INTERVAL = 0.2
MAX_BODY = 123_456


def _wait(predicate: Any, what: str, timeout: float = 10.0) -> None:
    """Let the greenlets run until ``predicate()`` holds (gevent's clock; fails after ``timeout``)."""
    with gevent.Timeout(timeout, AssertionError(f"timed out waiting for {what}")):
        while not predicate():
            gevent.sleep(0.01)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Apply the patches (undone afterwards); count the calls of our code that engine.io reaches."""
    for owner, name in ((Socket, "send"), (Socket, "poll"), (Socket, "schedule_ping"),
                        (Socket, "_websocket_handler"), (Socket, "close"), (BaseServer, "generate_id")):
        monkeypatch.setattr(owner, name, vars(owner)[name])
    monkeypatch.setitem(engineio_gevent._async, "websocket", engineio_gevent._async["websocket"])
    monkeypatch.setattr(gevent.config, "track_greenlet_tree", gevent.config.track_greenlet_tree)
    monkeypatch.setattr(sids, "_secret", os.urandom(32))
    monkeypatch.setattr(backpressure, "counters", Counter())
    seen: Counter[str] = Counter()
    receive = Socket.receive

    def counted_receive(self: Any, pkt: Any) -> Any:
        seen["received"] += 1
        return receive(self, pkt)

    monkeypatch.setattr(Socket, "receive", counted_receive)
    for name in ("writer_took", "send_now"):
        original = getattr(BarrelWebSocket, name)

        def spy(self: Any, *args: Any, _original: Any = original, _name: str = name) -> Any:
            result = _original(self, *args)
            seen[_name if result is not False else _name + " declined"] += 1
            return result

        monkeypatch.setattr(BarrelWebSocket, name, spy)
    yield seen


def _patch(limit: int = 1000, policy: str = "disconnect") -> None:
    slow = backpressure.SlowClientPolicy(limit, policy)
    apply.apply_patches(apply.PatchOptions(
        deflate_min_size=1024, client_queue_limit=limit, at_queue_limit=slow.at_limit,
        new_queue_peak=slow.new_peak, new_sid=sids.new_sid))


def _server() -> engineio.Server:
    quiet = logging.getLogger("tests.compat")
    return engineio.Server(async_mode="gevent", ping_interval=PING_INTERVAL, ping_timeout=5,
                           max_http_buffer_size=MAX_BODY, monitor_clients=False, logger=quiet)


class PairWebSocket(RawWebSocket):
    """RawWebSocket's frame reading over one end of a socket pair, the other end served by engine.io."""

    def __init__(self, server: engineio.Server) -> None:
        mine, theirs = gevent.socket.socketpair()
        key = base64.b64encode(os.urandom(16)).decode()
        environ = {
            "REQUEST_METHOD": "GET", "PATH_INFO": "/engine.io/", "QUERY_STRING": "EIO=4&transport=websocket",
            "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade", "HTTP_SEC_WEBSOCKET_KEY": key,
            "HTTP_SEC_WEBSOCKET_VERSION": "13", SOCKET_KEY: theirs, "wsgi.input": io.BytesIO(),
        }
        self.served = gevent.spawn(_serve, server, environ)
        self.sock, self.buffer = mine, b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed during the handshake"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head


def _serve(server: engineio.Server, environ: dict[str, Any]) -> None:
    try:
        server.handle_request(environ, lambda status, headers: None)
    except StopIteration:  # how BarrelWebSocket tells gunicorn the response was written
        pass


def _polling(server: engineio.Server, method: str = "GET", sid: str | None = None) -> str:
    query = "EIO=4&transport=polling" + (f"&sid={sid}" if sid else "")
    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/engine.io/", "QUERY_STRING": query,
               "wsgi.input": io.BytesIO(), "CONTENT_LENGTH": "0"}
    return b"".join(server.handle_request(environ, lambda status, headers: None)).decode()


def test_websocket_sessions_go_through_every_patch(calls: Counter[str]) -> None:
    _patch()
    server = _server()
    ws = PairWebSocket(server)
    try:
        assert ws.next_message().startswith("0{")  # OPEN, queued before the upgrade: the writer polled
        (sid,) = server.sockets
        eio_socket = server.sockets[sid]
        assert calls["writer_took"] >= 1, "engine.io's WebSocket writer no longer calls Socket.poll"
        assert sids.owner_of(sid) == os.getpid(), "engine.io no longer takes session ids from generate_id"
        assert engineio_sessions.max_http_buffer_size() == MAX_BODY
        assert engineio_lean.ping_scheduled(eio_socket), "engine.io no longer calls schedule_ping at connect"
        assert websocket_driver.websocket_of(eio_socket) is not None

        server.send(sid, "direct")
        assert ws.next_message() == "4direct"
        assert calls["send_now"] == 1, "Server.send no longer reaches the direct write through Socket.send"

        assert ws.next_message() == "2"  # PING, from our timer
        assert not engineio_lean.ping_scheduled(eio_socket)
        ws.send_text("3")  # PONG: engine.io schedules the next ping through schedule_ping
        _wait(lambda: engineio_lean.ping_scheduled(eio_socket), "schedule_ping at PONG")
        assert ws.next_message() == "2"
    finally:
        ws.close()
        ws.served.join(timeout=10)
    assert ws.served.dead
    _wait(lambda: websocket_driver.websocket_of(eio_socket) is None, "the WebSocket forgotten at its end")


def _greenlets() -> list[gevent.Greenlet]:
    return [g for g in gc.get_objects() if isinstance(g, gevent.Greenlet) and not g.dead]


def test_an_idle_websocket_holds_no_greenlet_and_a_burst_drains_in_order(calls: Counter[str]) -> None:
    _patch()
    server = _server()
    ws = PairWebSocket(server)
    try:
        assert ws.next_message().startswith("0{")
        (sid,) = server.sockets
        eio_socket = server.sockets[sid]
        websocket = websocket_driver.websocket_of(eio_socket)
        assert websocket is not None
        # Idle: no greenlet at all. The request's greenlet returned (engine.io's own handler keeps
        # it, reading, and a writer); the WebSocket reads when its socket is readable.
        _wait(lambda: websocket.drainer is None and ws.served.dead, "the request's greenlet to return")
        assert websocket.detached and _greenlets() == []
        ws.send_text("4from the client")  # read without a greenlet waiting for it
        _wait(lambda: calls["received"] == 1, "the message at engine.io")
        # A burst larger than the socket pair's buffers, unread: the rest queues, a drainer writes it.
        big = "x" * 100_000
        for n in range(40):
            server.send(sid, f"{n}:{big}")
        assert eio_socket.queue.qsize() > 0 and websocket.drainer is not None
        assert [ws.next_message() for _ in range(40)] == [f"4{n}:{big}" for n in range(40)]
        _wait(lambda: websocket.drainer is None and not eio_socket.queue.qsize(), "the drainer to end")
        assert calls["writer_took"] >= 2
        # A server-side close writes what is queued, then the close frame.
        for n in range(40):
            server.send(sid, f"last{n}:{big}")
        gevent.spawn(server.disconnect, sid)
        assert [ws.next_message() for _ in range(40)] == [f"4last{n}:{big}" for n in range(40)]
        assert ws.next_message() == "1"  # engine.io's CLOSE packet
        opcode, _fin, _payload = ws.next_frame()
        assert opcode == 8  # the WebSocket close frame
    finally:
        ws.close()
        ws.served.join(timeout=10)
    _wait(lambda: websocket_driver.websocket_of(eio_socket) is None and _greenlets() == [],
          "the connection's end")


@pytest.mark.parametrize("policy", ["drop_oldest", "disconnect"])
def test_a_client_that_does_not_poll_meets_the_queue_bound(calls: Counter[str], policy: str) -> None:
    _patch(limit=3, policy=policy)
    server = _server()
    opened = _polling(server)
    assert opened.startswith("0{")
    sid = next(iter(server.sockets))
    eio_socket = server.sockets[sid]
    for n in range(5):
        server.send(sid, f"m{n}")
    counters = backpressure.counters
    assert counters["client_queue_peak"] == 3
    if policy == "drop_oldest":
        assert counters["packets_dropped_slow"] == 2 and eio_socket.queue.qsize() == 3
        assert _polling(server, sid=sid).split("\x1e") == ["4m2", "4m3", "4m4"]
    else:
        assert counters["clients_dropped_slow"] == 1
        _wait(lambda: eio_socket.closed, "the slow client's session closed")
        assert sid not in server.sockets or server.sockets[sid].closed
