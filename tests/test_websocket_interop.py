"""barrel's WebSocket against independent implementations: Python websockets, node ws, Chromium.

Each client talks to barrel's WebSocket under gunicorn with the barrel worker
(-w 2): the echo app (tests/apps/ws_echo.py), with and without
permessage-deflate, and engine.io with ``websocket_deflate`` on, where the
client speaks engine.io's protocol itself. What is checked, with each client:
text and binary messages at the frame-length boundaries (125/126,
65535/65536 bytes) and up to 1 MiB, on both sides of the deflate threshold
(``websocket_deflate_min_size``); fragmented messages (compressed too);
pings; close codes; invalid UTF-8 in a text message (closed with 1007); and
that a large message the server sends is compressed on the wire (node ws
counts the bytes it read).

permessage-deflate as these clients offer it: websockets ``client_max_window_bits``,
ws ``client_max_window_bits`` too, Chromium its own offer; barrel answers
without context takeover in both directions.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.harness import REPO, Gunicorn, gunicorn

pytestmark = pytest.mark.integration

NODE = shutil.which("node")
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
SIZES = (0, 1, 125, 126, 1023, 1024, 65535, 65536, 1 << 20)
DEFLATE_ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


@pytest.fixture(scope="module")
def echo() -> Iterator[Gunicorn]:
    with gunicorn(app="tests.apps.ws_echo:wsgi", workers=2, env={"BARREL_STORE": "none"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def sio_deflate() -> Iterator[Gunicorn]:
    with gunicorn(workers=2, env={"BARREL_WEBSOCKET_DEFLATE": "on"}) as srv:
        yield srv


def _ws_url(srv: Gunicorn, path: str = "/echo") -> str:
    return f"ws://127.0.0.1:{srv.port}{path}"


def _text(size: int) -> str:
    """``size`` bytes of UTF-8 text with multi-byte characters (compressible, as real traffic is)."""
    unit = "barrel é ✓ "
    text = unit * (size // len(unit.encode()))
    return text + "x" * (size - len(text.encode()))


def _binary(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


# --------------------------------------------------------------------------- Python websockets


def _python_client(srv: Gunicorn, compression: str | None, path: str = "/echo") -> ClientConnection:
    return connect(_ws_url(srv, path), compression=compression, max_size=None, proxy=None,
                   open_timeout=10, close_timeout=10, ping_interval=None)


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_websockets_messages_of_every_size_come_back_as_sent(echo: Gunicorn, compression: str | None) -> None:
    with _python_client(echo, compression) as ws:
        answer = ws.response.headers.get("Sec-WebSocket-Extensions")
        assert answer == (DEFLATE_ANSWER if compression else None)
        for size in SIZES:
            text, blob = _text(size), _binary(size)
            assert len(text.encode()) == size
            ws.send(text)
            assert ws.recv(timeout=10) == text, size
            ws.send(blob)
            assert ws.recv(timeout=10) == blob, size


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_websockets_fragments_pings_and_close(echo: Gunicorn, compression: str | None) -> None:
    with _python_client(echo, compression) as ws:
        parts = ["κόσ", "με ", _text(70_000), ""]
        ws.send(iter(parts))  # one message in four frames (compressed as one with deflate)
        assert ws.recv(timeout=10) == "".join(parts)
        ws.send(iter([b"\x00\xff", _binary(3000)]))
        assert ws.recv(timeout=10) == b"\x00\xff" + _binary(3000)
        assert ws.ping(b"are you there").wait(10)
        ws.close(4000, "bye")
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4000


@pytest.mark.parametrize("compression", [None, "deflate"])
def test_websockets_invalid_utf8_text_is_closed_with_1007(echo: Gunicorn, compression: str | None) -> None:
    with _python_client(echo, compression) as ws:
        ws.send("fine")
        assert ws.recv(timeout=10) == "fine"
        ws.send(b"caf\xc3(", text=True)  # a text frame whose bytes are not UTF-8
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1007


def test_websockets_through_engineio_with_deflate(sio_deflate: Gunicorn) -> None:
    with _python_client(sio_deflate, "deflate", "/socket.io/?EIO=4&transport=websocket") as ws:
        assert ws.response.headers.get("Sec-WebSocket-Extensions") == DEFLATE_ANSWER
        assert str(ws.recv(timeout=10)).startswith("0{")  # engine.io OPEN
        ws.send("40")  # socket.io CONNECT
        assert str(ws.recv(timeout=10)).startswith("40{")
        token = _text(5000)  # over the deflate threshold both ways
        ws.send("42" + json.dumps(["broadcast", {"token": token}]))
        seen = []
        while len(seen) < 10:
            packet = str(ws.recv(timeout=10))
            seen.append(packet[:40])
            if packet.startswith("42"):
                assert json.loads(packet[2:]) == ["news", {"token": token}]
                return
        pytest.fail(f"no broadcast back: {seen}")


# --------------------------------------------------------------------------- node ws


def _run_node(script: Path, *args: str, timeout: float = 120) -> list[dict[str, Any]]:
    if NODE is None or not (REPO / "node_modules" / "ws").is_dir():
        pytest.fail(f"needs node and {REPO / 'node_modules' / 'ws'} (npm ci)", pytrace=False)
    run = subprocess.run([NODE, str(script), *args], cwd=REPO, capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("deflate", ["off", "on"])
def test_node_ws(echo: Gunicorn, deflate: str) -> None:
    results = _run_node(REPO / "tests" / "js" / "ws_interop.mjs", _ws_url(echo), deflate)
    report = {r["case"]: r for r in results}
    assert report["open"]["extensions"] == (DEFLATE_ANSWER if deflate == "on" else "")
    for size in SIZES:
        assert report[f"text {size}"]["same"], report[f"text {size}"]
        assert report[f"binary {size}"]["same"], report[f"binary {size}"]
    assert report["fragmented text"]["same"] and report["fragmented binary"]["same"]
    assert report["ping"]["pong"] == "are you there"
    big = report["text 1048576"]
    if deflate == "on":  # the echo of 1 MiB of repetitive text came compressed
        assert big["bytesRead"] < 100_000, big
    else:
        assert big["bytesRead"] > 1 << 20, big
    assert report["close"]["code"] == 4000
    assert report["invalid utf-8"]["code"] == 1007


def test_node_ws_through_engineio_with_deflate(sio_deflate: Gunicorn) -> None:
    results = _run_node(REPO / "tests" / "js" / "ws_interop.mjs",
                        _ws_url(sio_deflate, "/socket.io/?EIO=4&transport=websocket"), "engineio")
    report = {r["case"]: r for r in results}
    assert report["open"]["extensions"] == DEFLATE_ANSWER
    assert report["engine.io"]["open"].startswith("0{")
    assert report["engine.io"]["news"] == ["news", {"token": report["engine.io"]["token"]}]
    assert report["engine.io"]["bytesRead"] < len(report["engine.io"]["token"]) // 2  # compressed


# --------------------------------------------------------------------------- Chromium


def _run_chromium(url: str, mode: str) -> dict[str, Any]:
    missing = [] if CHROMIUM.exists() else [f"{CHROMIUM} (apt-get install chromium)"]
    if not (REPO / "node_modules" / "playwright-core").is_dir():
        missing.append("node_modules/playwright-core (npm ci)")
    if missing:
        pytest.fail("the Chromium test needs " + ", ".join(missing), pytrace=False)
    (result,) = _run_node(REPO / "tests" / "browser" / "ws_interop.mjs", url, mode, str(CHROMIUM))
    return result


def test_chromium_websocket(echo: Gunicorn) -> None:
    result = _run_chromium(_ws_url(echo), "echo")
    assert result["extensions"] == DEFLATE_ANSWER  # Chromium offers permessage-deflate
    assert result["errors"] == []
    for echoed in result["echoes"]:
        assert echoed["same"], echoed
    assert {e["size"] for e in result["echoes"]} == set(SIZES)
    assert result["closeCode"] == 4000


def test_chromium_through_engineio_with_deflate(sio_deflate: Gunicorn) -> None:
    result = _run_chromium(_ws_url(sio_deflate, "/socket.io/?EIO=4&transport=websocket"), "engineio")
    assert result["extensions"] == DEFLATE_ANSWER
    assert result["errors"] == []
    assert result["open"].startswith("0{")
    assert result["news"] == ["news", {"token": result["token"]}]
