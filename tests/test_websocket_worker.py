"""The barrel worker's WebSocket: protocol checks, deflate policy, no dependence on gevent-websocket."""
from __future__ import annotations

import base64
import os
import socket
import struct
from pathlib import Path

import pytest

from gunicorn_barrel.ws import deflate, frames
from tests.harness import gunicorn, read_response_head, spread_clients, wait_for
from tests.test_ws_frames import client_frame

pytestmark = pytest.mark.integration


def _handshake(port: int, offer_deflate: bool) -> str:
    """Send a raw WebSocket upgrade to engine.io and return the response head."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if offer_deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = read_response_head(sock)
    return head.split(b"\r\n\r\n")[0].decode(errors="replace").lower()


def test_deflate_is_refused_by_default() -> None:
    with gunicorn(workers=2) as srv:
        head = _handshake(srv.port, offer_deflate=True)
        assert head.startswith("http/1.1 101")
        assert "permessage-deflate" not in head


def test_deflate_can_be_enabled() -> None:
    with gunicorn(workers=2, env={"BARREL_WEBSOCKET_DEFLATE": "on"}) as srv:
        head = _handshake(srv.port, offer_deflate=True)
        assert head.startswith("http/1.1 101")
        assert "sec-websocket-extensions: permessage-deflate" in head


def test_websocket_works_when_gevent_websocket_is_importable(tmp_path: Path) -> None:
    # engineio switches to gevent-websocket whenever `geventwebsocket` imports;
    # an importable stand-in is enough to trigger that switch.
    (tmp_path / "geventwebsocket").mkdir()
    (tmp_path / "geventwebsocket" / "__init__.py").write_text("")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    for extra in ((), ("--preload",)):
        with gunicorn(workers=2, env=env, extra_args=extra) as srv:
            clients = spread_clients(srv.url, 2, per_worker=1)
            try:
                clients[0].call("broadcast", {"hello": "ws"})
                for c in clients:
                    wait_for(lambda c=c: {"hello": "ws"} in c.got("news"), 10, "broadcast over websocket")
            finally:
                for c in clients:
                    c.close()


class RawWebSocket:
    """A WebSocket client written out frame by frame, to send what real clients never do."""

    def __init__(self, port: int, offer_deflate: bool = False) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1", f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if offer_deflate:
            lines.append("Sec-WebSocket-Extensions: permessage-deflate")
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed during the handshake"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.head = head.decode().lower()
        assert self.head.startswith("http/1.1 101"), self.head
        assert f"sec-websocket-accept: {frames.accept_key(key)}".lower() in self.head

    def send_frame(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_text(self, text: str) -> None:
        self.sock.sendall(client_frame(frames.OP_TEXT, text.encode()))

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed by the server")
            self.buffer += chunk
        out, self.buffer = self.buffer[:size], self.buffer[size:]
        return out

    def next_frame(self) -> tuple[int, bool, bytes]:
        """(opcode, RSV1, payload) of the server's next frame (server frames are never masked)."""
        first, second = self._read(2)
        assert not second & 0x80, "a server frame was masked"
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", self._read(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", self._read(8))[0]
        return first & 0x0F, bool(first & 0x40), self._read(size)

    def next_message(self) -> str:
        opcode, compressed, payload = self.next_frame()
        assert opcode == frames.OP_TEXT, opcode
        return (deflate.inflate(payload, 1 << 24) if compressed else payload).decode()

    def connect_socketio(self) -> None:
        assert self.next_message().startswith("0{")  # engine.io OPEN
        self.send_text("40")
        assert self.next_message().startswith("40{")

    def close(self) -> None:
        self.sock.close()


def _close_code(ws: RawWebSocket) -> int:
    """Read until the server's close frame; its status code."""
    while True:
        opcode, _compressed, payload = ws.next_frame()
        if opcode == frames.OP_CLOSE:
            return int(struct.unpack("!H", payload[:2])[0])


@pytest.mark.parametrize(("bad_frame", "code"), [
    (client_frame(frames.OP_TEXT, b"42", masked=False), 1002),
    (client_frame(frames.OP_TEXT, b"42", rsv=0x40), 1002),
    (client_frame(frames.OP_TEXT, b"4\xff"), 1007),
    # a 5 MB message announced: refused from its header, nothing more is read
    (client_frame(frames.OP_BINARY, b"x" * 5_000_000)[:14], 1009),
])
def test_bad_frames_get_their_close_code_and_cost_the_others_nothing(bad_frame: bytes, code: int) -> None:
    with gunicorn(workers=2) as srv:
        clients = spread_clients(srv.url, 2, per_worker=1)
        try:
            bad = [RawWebSocket(srv.port) for _ in range(4)]  # lands on both workers
            for ws in bad:
                ws.connect_socketio()
                ws.send_frame(bad_frame)
            for ws in bad:
                assert _close_code(ws) == code
                ws.close()
            clients[0].call("broadcast", {"after": code})
            for c in clients:
                wait_for(lambda c=c: {"after": code} in c.got("news"), 10, "a broadcast after the bad frames")
        finally:
            for c in clients:
                c.close()


def test_client_ping_gets_pong_and_large_messages_arrive_whole() -> None:
    with gunicorn(workers=2) as srv:
        ws = RawWebSocket(srv.port)
        try:
            ws.connect_socketio()
            ws.send_frame(client_frame(frames.OP_PING, b"are you there"))
            assert ws.next_frame() == (frames.OP_PONG, False, b"are you there")
            big = "y" * 900_000  # far over a socket buffer: written in several sends
            ws.send_text('42["broadcast",{"big":"' + big + '"}]')
            message = ws.next_message()
            assert message == '42["news",{"big":"' + big + '"}]'
        finally:
            ws.close()


def test_deflate_compresses_large_messages_only() -> None:
    env = {"BARREL_WEBSOCKET_DEFLATE": "on", "BARREL_WEBSOCKET_DEFLATE_MIN_SIZE": "1000"}
    with gunicorn(workers=2, env=env) as srv:
        ws = RawWebSocket(srv.port, offer_deflate=True)
        try:
            assert "no_context_takeover" in ws.head
            ws.connect_socketio()
            for size, compressed in ((100, False), (5000, True)):
                text = "z" * size
                ws.send_text('42["broadcast",{"t":"' + text + '"}]')
                opcode, rsv1, payload = ws.next_frame()
                assert (opcode, rsv1) == (frames.OP_TEXT, compressed)
                body = deflate.inflate(payload, 1 << 20) if rsv1 else payload
                assert body.decode() == '42["news",{"t":"' + text + '"}]'
                if compressed:
                    assert len(payload) < size // 10
            # A compressed message from the client is understood too.
            zipped = deflate.compress(b'42["broadcast","zipped"]')
            ws.send_frame(client_frame(frames.OP_TEXT, zipped, rsv=0x40))
            assert ws.next_message() == '42["news","zipped"]'
        finally:
            ws.close()


def test_engineio_heartbeat_on_timers() -> None:
    """Pings come every ping_interval; a client that stops answering them is dropped."""
    env = {"TEST_PING_INTERVAL": "0.5", "TEST_PING_TIMEOUT": "1"}
    with gunicorn(workers=2, env=env) as srv:
        silent = RawWebSocket(srv.port)
        try:
            silent.connect_socketio()
            assert silent.next_message() == "2"  # engine.io PING, never answered
            # The server closes the session (close frame, then EOF).
            assert _close_code(silent) == 1000
        finally:
            silent.close()
        ws = RawWebSocket(srv.port)
        try:
            ws.connect_socketio()
            for _ in range(4):  # answered pings keep it open past the timeout
                assert ws.next_message() == "2"
                ws.send_text("3")  # PONG
            ws.send_text('42["broadcast","still here"]')
            wait_for(lambda: ws.next_message() == '42["news","still here"]', 10, "the client served")
        finally:
            ws.close()


def test_websockets_count_against_worker_connections_and_one_more_gets_503() -> None:
    """An upgraded WebSocket holds no greenlet, hence no slot of gunicorn's pool: the worker
    counts it itself. With worker_connections 4, four WebSockets are served, the fifth
    connection is answered 503; once one WebSocket closes, a new one is served."""
    with gunicorn(workers=1, extra_args=("--worker-connections", "4")) as srv:
        held = []
        try:
            for _ in range(4):
                ws = RawWebSocket(srv.port)
                ws.connect_socketio()
                held.append(ws)
            with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as extra:
                extra.sendall(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response_head(extra).startswith(b"HTTP/1.1 503 "), "a fifth connection served"
            assert "is full (worker_connections 4" in srv.log()
            held.pop().close()

            def served() -> bool:
                with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as probe:
                    probe.sendall(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n")
                    return read_response_head(probe).startswith(b"HTTP/1.1 200 ")

            wait_for(served, 10, "room for a connection once a WebSocket closed")
            held[0].send_text('42["broadcast","still served"]')
            wait_for(lambda: held[0].next_message() == '42["news","still served"]', 10, "the others served")
        finally:
            for ws in held:
                ws.close()
