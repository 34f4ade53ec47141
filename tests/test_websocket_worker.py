"""The barrel worker's WebSocket: deflate policy, and no dependence on gevent-websocket."""
from __future__ import annotations

import base64
import os
import socket
from pathlib import Path

import pytest

from tests.harness import gunicorn, spread_clients, wait_for

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
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
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
