"""The WebSocket frame parser and permessage-deflate, without a network (sans-io)."""
from __future__ import annotations

import os
import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gunicorn_barrel.ws import deflate, frames


def client_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """A frame as a client sends it: masked (unless told otherwise)."""
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((first, mask_bit | size))
    elif size < 65536:
        head = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + frames.unmask(payload, key)  # XOR is its own inverse


def parse_all(
    data: bytes, max_size: int = 1 << 20, chunk: int = 0, inflate: bool = False
) -> list[frames.Event]:
    parser = frames.FrameParser(max_size, deflate.inflate if inflate else None)
    if not chunk:
        return parser.feed(data)
    out: list[frames.Event] = []
    for i in range(0, len(data), chunk):
        out.extend(parser.feed(data[i:i + chunk]))
    return out


def test_accept_key_matches_rfc_6455_example() -> None:
    assert frames.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@given(st.text(max_size=70_000), st.integers(min_value=0, max_value=50))
def test_text_messages_round_trip_in_any_chunking(text: str, chunk: int) -> None:
    assert parse_all(client_frame(frames.OP_TEXT, text.encode()), chunk=chunk) == [frames.Message(text)]


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5))
def test_fragmented_binary_message_is_joined(parts: list[bytes]) -> None:
    data = b"".join(
        client_frame(frames.OP_BINARY if i == 0 else frames.OP_CONTINUATION, part, fin=i == len(parts) - 1)
        for i, part in enumerate(parts)
    )
    assert parse_all(data) == [frames.Message(b"".join(parts))]


def test_control_frames_between_fragments_are_delivered() -> None:
    data = (client_frame(frames.OP_TEXT, b"he", fin=False) + client_frame(frames.OP_PING, b"p")
            + client_frame(frames.OP_CONTINUATION, b"llo"))
    assert parse_all(data) == [frames.Ping(b"p"), frames.Message("hello")]


def test_close_frame_code_and_reason() -> None:
    data = client_frame(frames.OP_CLOSE, struct.pack("!H", 1001) + b"bye")
    assert parse_all(data) == [frames.Close(1001, "bye")]


@pytest.mark.parametrize(("data", "code"), [
    (client_frame(frames.OP_TEXT, b"x", masked=False), 1002),
    (client_frame(frames.OP_TEXT, b"x", rsv=0x20), 1002),
    (client_frame(frames.OP_TEXT, b"x", rsv=0x40), 1002),  # RSV1 without deflate
    (client_frame(0x3, b"x"), 1002),
    (client_frame(frames.OP_CONTINUATION, b"x"), 1002),
    (client_frame(frames.OP_PING, b"x" * 126), 1002),
    (client_frame(frames.OP_PING, b"x", fin=False), 1002),
    (client_frame(frames.OP_TEXT, b"a", fin=False) + client_frame(frames.OP_TEXT, b"b"), 1002),
    (client_frame(frames.OP_TEXT, b"\xff\xfe"), 1007),
    (client_frame(frames.OP_CLOSE, b"\x03"), 1002),
    (client_frame(frames.OP_CLOSE, struct.pack("!H", 999)), 1002),
])
def test_protocol_violations_name_their_close_code(data: bytes, code: int) -> None:
    with pytest.raises(frames.ProtocolError) as caught:
        parse_all(data)
    assert caught.value.code == code


def test_oversized_message_is_refused_from_its_header() -> None:
    header_only = client_frame(frames.OP_BINARY, b"x" * 2000)[:8]  # length and mask, no payload yet
    with pytest.raises(frames.ProtocolError) as caught:
        parse_all(header_only, max_size=1000)
    assert caught.value.code == 1009


def test_fragments_count_towards_the_limit() -> None:
    data = (client_frame(frames.OP_BINARY, b"x" * 600, fin=False)
            + client_frame(frames.OP_CONTINUATION, b"x" * 600))
    with pytest.raises(frames.ProtocolError):
        parse_all(data, max_size=1000)


@given(st.binary(max_size=5000))
def test_server_frames_carry_the_payload_whole(payload: bytes) -> None:
    data = frames.frame(frames.OP_BINARY, payload)
    assert data[0] == 0x82 and not data[1] & 0x80
    assert data.endswith(payload)
    assert len(data) - len(payload) == (2 if len(payload) < 126 else 4)


def test_deflate_negotiation() -> None:
    answer = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    assert deflate.negotiate("permessage-deflate; client_max_window_bits") == deflate.Agreement(answer)
    assert deflate.negotiate("x-webkit-deflate-frame, permessage-deflate") == deflate.Agreement(answer)
    assert deflate.negotiate("permessage-deflate; server_max_window_bits=10") == deflate.Agreement(
        answer + "; server_max_window_bits=10", 10)
    assert deflate.negotiate("permessage-deflate; unknown_param") is None
    assert deflate.negotiate("") is None


def _inflate_in_window(data: bytes, window_bits: int) -> bytes:
    """Inflate as a peer with a ``window_bits`` window does: zlib checks a
    back-reference against its window only across calls, so output comes 16 bytes a call."""
    decompressor = zlib.decompressobj(-window_bits)
    out, rest = b"", data + b"\x00\x00\xff\xff"
    while rest:
        out += decompressor.decompress(rest, 16)
        rest = decompressor.unconsumed_tail
    return out


@pytest.mark.parametrize("window_bits", range(8, 16))
def test_a_granted_server_window_holds_every_back_reference(window_bits: int) -> None:
    # 40 random bytes repeated every 2 ** window_bits + 100 bytes: just out of
    # the window's reach, while a 15-bit window would refer back to them. In
    # between, random letters of 16 (compressible: zlib would store random
    # bytes as they are, without a back-reference).
    block = bytes(b | 0x80 for b in os.urandom(40))

    def letters() -> bytes:
        return bytes(ord("a") + (b & 15) for b in os.urandom(2 ** window_bits + 60))

    message = b"".join(block + letters() for _ in range(4))
    assert _inflate_in_window(deflate.compress(message, window_bits), window_bits) == message
    if window_bits < 15:  # the check above can fail: a full window reaches further
        with pytest.raises(zlib.error, match="too far back"):
            _inflate_in_window(deflate.compress(message), window_bits)


@given(st.binary(max_size=20_000))
def test_compressed_messages_round_trip(payload: bytes) -> None:
    compressed = deflate.compress(payload)
    data = client_frame(frames.OP_BINARY, compressed, rsv=0x40)
    assert parse_all(data, inflate=True) == [frames.Message(payload)]


def test_a_deflate_bomb_is_refused() -> None:
    bomb = deflate.compress(b"\0" * 10_000_000)
    with pytest.raises(frames.ProtocolError) as caught:
        parse_all(client_frame(frames.OP_BINARY, bomb, rsv=0x40), max_size=100_000, inflate=True)
    assert caught.value.code == 1009


def test_garbage_deflate_data_is_refused() -> None:
    with pytest.raises(frames.ProtocolError) as caught:
        parse_all(client_frame(frames.OP_BINARY, b"\xff" * 50, rsv=0x40), inflate=True)
    assert caught.value.code == 1007


# --------------------------------------------------------------------------- in order, as it arrives


def _events_then_error(parser: frames.FrameParser) -> tuple[list[frames.Event], int | None]:
    """Every event next_event() gives, then the close code of the error that stopped it (or None)."""
    events: list[frames.Event] = []
    try:
        while (event := parser.next_event()) is not None:
            events.append(event)
    except frames.ProtocolError as exc:
        return events, exc.code
    return events, None


@pytest.mark.parametrize(("bad", "code"), [
    (client_frame(frames.OP_TEXT, b"x", rsv=0x20), 1002),  # Autobahn 3.2
    (client_frame(0x5, b"x"), 1002),  # 4.1.3: reserved data opcode
    (client_frame(0xB, b"x"), 1002),  # 4.2.3: reserved control opcode
    (client_frame(frames.OP_CONTINUATION, b"x"), 1002),  # 5.15: nothing to continue
    (client_frame(frames.OP_TEXT, b"\xff"), 1007),
], ids=["rsv2", "opcode-5", "opcode-0xb", "continuation", "bad-utf8"])
def test_events_before_a_bad_frame_come_out_before_its_error(bad: bytes, code: int) -> None:
    # All in one read, as a client that writes them at once is read: the
    # message and the ping before the bad frame are still answered.
    parser = frames.FrameParser(1 << 20)
    parser.receive(client_frame(frames.OP_TEXT, b"Hello") + client_frame(frames.OP_PING, b"p")
                   + bad + client_frame(frames.OP_PING, b"after"))
    assert _events_then_error(parser) == ([frames.Message("Hello"), frames.Ping(b"p")], code)


def test_a_fragmented_message_before_a_bad_frame_comes_out_whole() -> None:
    parser = frames.FrameParser(1 << 20)
    parser.receive(client_frame(frames.OP_TEXT, b"frag", fin=False)
                   + client_frame(frames.OP_CONTINUATION, b"ment")
                   + client_frame(frames.OP_CONTINUATION, b"x", fin=False))
    assert _events_then_error(parser) == ([frames.Message("fragment")], 1002)


# Autobahn 6.4.*: a valid part, then a code point over U+10FFFF, then more.
PART1, PART2, PART3 = "κόσμε".encode(), b"\xf4\x90\x80\x80", b"edited"


def test_invalid_utf8_fails_in_a_frame_still_arriving() -> None:
    data = client_frame(frames.OP_TEXT, PART1 + PART2 + PART3)
    parser = frames.FrameParser(1 << 20)
    head = len(data) - len(PART1 + PART2 + PART3)
    assert parser.feed(data[:head + len(PART1)]) == []  # valid so far: wait for more
    with pytest.raises(frames.ProtocolError) as caught:  # not waiting for PART3
        parser.feed(data[head + len(PART1):head + len(PART1) + 2])
    assert caught.value.code == 1007


def test_invalid_utf8_fails_in_a_continuation_frame_still_arriving() -> None:
    parser = frames.FrameParser(1 << 20)
    assert parser.feed(client_frame(frames.OP_TEXT, PART1, fin=False)) == []
    rest = client_frame(frames.OP_CONTINUATION, PART2 + PART3)
    with pytest.raises(frames.ProtocolError) as caught:
        parser.feed(rest[:len(rest) - len(PART3)])
    assert caught.value.code == 1007


def test_a_character_split_between_pieces_of_a_frame_is_not_refused() -> None:
    data = client_frame(frames.OP_TEXT, PART1)
    cut = len(data) - len(PART1) + 1  # inside the two bytes of κ
    parser = frames.FrameParser(1 << 20)
    assert parser.feed(data[:cut]) == []
    assert parser.feed(data[cut:]) == [frames.Message(PART1.decode())]


@given(st.lists(st.text(max_size=200), min_size=1, max_size=4), st.integers(min_value=1, max_value=23),
       st.booleans())
def test_fragmented_text_in_any_chunking_arrives_whole(parts: list[str], chunk: int, binary: bool) -> None:
    opcode = frames.OP_BINARY if binary else frames.OP_TEXT
    data = b"".join(
        client_frame(opcode if i == 0 else frames.OP_CONTINUATION, part.encode(), fin=i == len(parts) - 1)
        for i, part in enumerate(parts)
    ) + client_frame(frames.OP_PING, b"p")
    whole = "".join(parts)
    assert parse_all(data, chunk=chunk) == [frames.Message(whole.encode() if binary else whole),
                                            frames.Ping(b"p")]
