"""WebSocket edge cases found in review: fragment bounds, early UTF-8 errors, bad keys, deflate offers.

Sans-io checks of gunicorn_barrel/ws/, then the same cases against a real
barrel worker over a raw socket.
"""
from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gunicorn_barrel.ws import deflate, frames
from gunicorn_barrel.ws.connection import upgrade_problem
from tests.harness import gunicorn, read_response_head, spread_clients, wait_for
from tests.test_websocket_worker import RawWebSocket
from tests.test_ws_frames import client_frame


def _fragments(opcode: int, parts: list[bytes]) -> bytes:
    """One message as len(parts) frames: the first carries the opcode, the last FIN."""
    out = b""
    for i, part in enumerate(parts):
        out += client_frame(opcode if i == 0 else frames.OP_CONTINUATION, part, fin=i == len(parts) - 1)
    return out


def _close_code(exc: pytest.ExceptionInfo[frames.ProtocolError]) -> int:
    return exc.value.code


@pytest.mark.parametrize("part", [b"", b"x"])
def test_a_message_of_too_many_fragments_is_refused(part: bytes) -> None:
    parser = frames.FrameParser(64 * 1024)
    assert parser.max_fragments == 64 * 1024 // frames.BYTES_PER_FRAGMENT
    parser.feed(client_frame(frames.OP_BINARY, part, fin=False))
    for _ in range(parser.max_fragments - 1):
        parser.feed(client_frame(frames.OP_CONTINUATION, part, fin=False))
    with pytest.raises(frames.ProtocolError) as exc:
        parser.feed(client_frame(frames.OP_CONTINUATION, part, fin=True))
    assert _close_code(exc) == frames.CLOSE_TOO_BIG


def test_a_message_of_as_many_fragments_as_allowed_arrives_whole() -> None:
    parser = frames.FrameParser(64 * 1024)
    parts = [bytes([n % 256]) for n in range(parser.max_fragments)]
    assert parser.feed(_fragments(frames.OP_BINARY, parts)) == [frames.Message(b"".join(parts))]


def test_small_limits_still_allow_some_fragments() -> None:
    assert frames.FrameParser(100).max_fragments >= 100


def test_invalid_utf8_is_refused_at_the_fragment_that_carries_it() -> None:
    parser = frames.FrameParser(1 << 20)
    assert parser.feed(client_frame(frames.OP_TEXT, b"ok ", fin=False)) == []
    with pytest.raises(frames.ProtocolError) as exc:
        parser.feed(client_frame(frames.OP_CONTINUATION, b"\xff", fin=False))  # not the last one
    assert _close_code(exc) == frames.CLOSE_BAD_DATA


def test_a_truncated_character_is_refused_at_the_last_fragment() -> None:
    parser = frames.FrameParser(1 << 20)
    assert parser.feed(client_frame(frames.OP_TEXT, b"\xc3", fin=False)) == []  # may be completed
    with pytest.raises(frames.ProtocolError) as exc:
        parser.feed(client_frame(frames.OP_CONTINUATION, b"", fin=True))
    assert _close_code(exc) == frames.CLOSE_BAD_DATA


@given(st.text(max_size=300), st.lists(st.integers(min_value=0, max_value=1200), max_size=8))
def test_text_split_anywhere_into_fragments_arrives_whole(text: str, cuts: list[int]) -> None:
    data = text.encode("utf-8")
    bounds = sorted({min(c, len(data)) for c in cuts})
    parts = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]
    assert frames.FrameParser(1 << 20).feed(_fragments(frames.OP_TEXT, parts)) == [frames.Message(text)]


@pytest.mark.parametrize(("key", "valid"), [
    ("dGhlIHNhbXBsZSBub25jZQ==", True),
    ("dGhlIHNhbXBsZSBub25jZQé=", False),  # non-ASCII (a 500 before)
    ("dGhlIHNhbXBsZSBub25j====", False),  # not base64 of 16 bytes
    ("dGhlIHNhbXBsZSBub25jZQ", False),
    ("", False),
])
def test_client_keys_are_base64_of_16_bytes(key: str, valid: bool) -> None:
    environ = {"REQUEST_METHOD": "GET", "HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade",
               "HTTP_SEC_WEBSOCKET_VERSION": "13", "HTTP_SEC_WEBSOCKET_KEY": key}
    assert (upgrade_problem(environ) is None) is valid
    assert frames.valid_client_key(key) is valid


ANSWER = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


@pytest.mark.parametrize(("offer", "answer"), [
    ("permessage-deflate", ANSWER),
    ("permessage-deflate; client_max_window_bits", ANSWER),
    ('permessage-deflate; client_max_window_bits="10"', ANSWER),
    ("permessage-deflate; server_no_context_takeover; client_no_context_takeover", ANSWER),
    ("permessage-deflate; server_max_window_bits=15", ANSWER + "; server_max_window_bits=15"),
    # RFC 7692 7.1: a parameter twice, a bad value, an unknown parameter: declined
    ("permessage-deflate; client_max_window_bits; client_max_window_bits", None),
    ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
    ("permessage-deflate; server_no_context_takeover=1", None),
    ("permessage-deflate; client_no_context_takeover=yes", None),
    ("permessage-deflate; server_max_window_bits", None),
    ("permessage-deflate; server_max_window_bits=16", None),
    ("permessage-deflate; client_max_window_bits=7", None),
    ("permessage-deflate; client_max_window_bits=010", None),
    ("permessage-deflate; client_max_window_bits=abc", None),
    ("permessage-deflate; mystery", None),
    # a smaller server window is granted (8 bits included: see deflate.compress)
    ("permessage-deflate; server_max_window_bits=10", ANSWER + "; server_max_window_bits=10"),
    ('permessage-deflate; server_max_window_bits="8"', ANSWER + "; server_max_window_bits=8"),
    # a declined offer leaves the next one to be taken
    ("permessage-deflate; client_max_window_bits=99, permessage-deflate", ANSWER),
])
def test_deflate_offers_are_declined_as_rfc_7692_says(offer: str, answer: str | None) -> None:
    agreement = deflate.negotiate(offer)
    assert (agreement.answer if agreement is not None else None) == answer


def _server_close_code(ws: RawWebSocket) -> int:
    while True:
        opcode, _compressed, payload = ws.next_frame()
        if opcode == frames.OP_CLOSE:
            return int(struct.unpack("!H", payload[:2])[0])


def _raw_upgrade(port: int, key: bytes) -> bytes:
    request = (b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
               b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        head = read_response_head(sock)
    return head


@pytest.mark.integration
def test_a_real_worker_refuses_endless_fragments_early_utf8_errors_and_bad_keys() -> None:
    with gunicorn(workers=2) as srv:
        clients = spread_clients(srv.url, 2, per_worker=1)
        try:
            # Empty continuation frames, never a last one: closed with 1009
            # once past the fragment bound (1 MB limit / 64), not at timeout.
            ws = RawWebSocket(srv.port)
            ws.connect_socketio()
            ws.send_frame(client_frame(frames.OP_TEXT, b"4", fin=False))
            ws.send_frame(client_frame(frames.OP_CONTINUATION, b"", fin=False) * 20_000)
            assert _server_close_code(ws) == frames.CLOSE_TOO_BIG
            ws.close()
            # Bad UTF-8 in a fragment that is not the last: 1007 at once.
            ws = RawWebSocket(srv.port)
            ws.connect_socketio()
            ws.send_frame(client_frame(frames.OP_TEXT, b"4", fin=False))
            ws.send_frame(client_frame(frames.OP_CONTINUATION, b"\xff", fin=False))
            assert _server_close_code(ws) == frames.CLOSE_BAD_DATA
            ws.close()
            head = _raw_upgrade(srv.port, "dGhlIHNhbXBsZSBub25jZQé=".encode("latin-1"))
            assert head.startswith(b"HTTP/1.1 400"), head
            clients[0].call("broadcast", {"after": "edge cases"})
            for c in clients:
                wait_for(lambda c=c: {"after": "edge cases"} in c.got("news"), 10, "a broadcast afterwards")
        finally:
            for c in clients:
                c.close()
        assert "Traceback" not in srv.log(), srv.log_path
